"""Start-up code shared by the apps' entry points."""
