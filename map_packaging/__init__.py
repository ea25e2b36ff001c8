"""MONAI Application Package (MAP) sources and build contexts for the project's apps.

    stage    an app folder that ``monai-deploy package`` accepts as it is: the app's entry point at its
             root, the project code it imports (``apps/``, ``operators/``), the model configs it reads,
             its app.yaml and the pinned requirements (:mod:`map_packaging.stage`);
    context  the Docker build context holoscan-cli's own packager writes for it (app.json, pkg.json,
             Dockerfile, app/, models/, pip/requirements.txt), stopping before ``docker buildx``
             (:mod:`map_packaging.context`);
    run      the packaged app folder run as the image's entrypoint runs it (:mod:`map_packaging.local_run`).

Named ``map_packaging``, not ``packaging``: that would shadow the PyPI ``packaging`` module holoscan-cli imports.
"""
