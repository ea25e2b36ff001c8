"""Anatomy of the synthetic CT phantom: tissue classes, the trunk, and the organs drawn into it.

A tissue volume (uint8 (z, y, x) of the classes below) is drawn structure by structure, each from
its own random stream, in an order where later structures replace only the tissues they may
(organs replace the cavity's fat and bowel, bone replaces muscle, ...). Frame and units as in
:mod:`.ct_phantom`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .ct_geometry import Ellipsoid, Grid, child_seed, paint, smooth_field, unit

# Tissue classes. The spleen label is ``tissue == SPLEEN`` after everything is drawn.
AIR, FAT, MUSCLE, BOWEL, GAS, LIVER, SPLEEN, KIDNEY, STOMACH_WALL, STOMACH_FLUID = range(10)
VESSEL, CORTICAL_BONE, CANCELLOUS_BONE, DISC, CSF, LUNG, HEART, SUBCUTANEOUS_FAT, WALL_MUSCLE = range(10, 19)
N_TISSUES = 19

# Tissues of the abdominal cavity that later structures (organs, lungs) may replace.
_CAVITY_FILL = (FAT, BOWEL, GAS)
_SOFT_ORGANS = (FAT, BOWEL, GAS, LIVER, SPLEEN, KIDNEY, STOMACH_WALL, STOMACH_FLUID, HEART)


class _Body:
    """The trunk outline: a superellipse whose size varies slowly along z."""

    def __init__(self, rng: np.random.Generator, grid: Grid):
        self.cx, self.cy = rng.uniform(-12, 12), rng.uniform(-8, 12)
        self.a, self.b = rng.uniform(145, 180), rng.uniform(105, 132)
        self.p = rng.uniform(2.1, 2.7)
        self.fat0 = rng.uniform(8, 30)
        self.fat_phase = rng.uniform(-0.6, 0.6)
        self.muscle = rng.uniform(7, 13)
        self.scale_amp, self.scale_period = rng.uniform(0.0, 0.05), rng.uniform(250, 500)
        self.scale_phase = rng.uniform(0, 2 * np.pi)
        self.z0 = rng.uniform(-20, 10)  # craniocaudal position of the anatomy in the field of view
        self.spleen_z = self.z0 + rng.uniform(0, 20)
        dx = grid.x[None, :] - self.cx
        dy = grid.y[:, None] - self.cy
        self.r = np.hypot(dx, dy)  # (ny, nx)
        self.theta = np.arctan2(dy, dx)
        rho = ((np.abs(dx) / self.a) ** self.p + (np.abs(dy) / self.b) ** self.p) ** (1.0 / self.p)
        self.boundary = np.where(rho > 0, self.r / np.maximum(rho, 1e-6), 1e6).astype(np.float32)  # (ny, nx)
        self.scale = 1.0 + self.scale_amp * np.sin(2 * np.pi * grid.z / self.scale_period + self.scale_phase)
        self.scale = self.scale.astype(np.float32)[:, None, None]

    def fat_thickness(self, theta):
        # thicker anteriorly (theta = -pi/2 points anterior), thinner over the back
        return self.fat0 * (1.0 + 0.35 * np.cos(theta + np.pi / 2 + self.fat_phase))

    def boundary_radius(self, phi: float) -> float:
        c, s = abs(np.cos(phi)), abs(np.sin(phi))
        return float(1.0 / ((c / self.a) ** self.p + (s / self.b) ** self.p) ** (1.0 / self.p))

    def inner_radius(self, phi: float) -> float:
        """Distance from the body centre to the inside of the muscle wall along direction phi (at z=0)."""
        return self.boundary_radius(phi) - float(self.fat_thickness(phi)) - self.muscle

    def point(self, phi: float, radius: float, z: float) -> np.ndarray:
        return np.array([self.cx + radius * np.cos(phi), self.cy + radius * np.sin(phi), z])


def draw_anatomy(streams: Mapping[str, np.random.Generator], grid: Grid) -> np.ndarray:
    """The tissue volume (uint8 (z, y, x)), one random stream per structure (keys: body, trunk, gas,
    stomach, liver, spine, kidneys, spleen, vessels, ribs, thorax)."""
    body = _Body(streams["body"], grid)
    z0, spleen_z = body.z0, body.spleen_z
    tissue = _draw_trunk(streams["trunk"], grid, body)
    _draw_gas_pockets(streams["gas"], grid, body, tissue, z0)
    _draw_stomach(streams["stomach"], grid, body, tissue, spleen_z)
    _draw_liver(streams["liver"], grid, body, tissue, z0)
    spine = _draw_spine(streams["spine"], grid, body, tissue, spleen_z)
    _draw_kidneys(streams["kidneys"], grid, body, tissue, spleen_z, spine)
    spleen_top = _draw_spleen(streams["spleen"], grid, body, tissue, spleen_z)
    _draw_vessels(streams["vessels"], grid, tissue, spine)
    _draw_ribs(streams["ribs"], grid, body, tissue, spleen_z)
    _draw_thorax(streams["thorax"], grid, body, tissue, spleen_top)
    return tissue


def _draw_trunk(rng: np.random.Generator, grid: Grid, body: _Body) -> np.ndarray:
    """Air, subcutaneous fat, muscle wall, and a cavity of bowel loops and mesenteric fat."""
    field_seed, correlation, threshold = child_seed(rng), rng.uniform(12, 20), rng.uniform(-0.6, 0.1)
    depth = body.boundary[None] * body.scale - body.r[None]  # mm inside the skin along the ray
    fat = body.fat_thickness(body.theta)[None].astype(np.float32)
    tissue = np.full(depth.shape, AIR, dtype=np.uint8)
    tissue[depth > 0] = SUBCUTANEOUS_FAT
    tissue[(depth >= fat) & (depth < fat + body.muscle)] = WALL_MUSCLE
    cavity = depth >= fat + body.muscle
    del depth, fat
    tissue[cavity] = FAT
    tissue[cavity & (smooth_field(field_seed, (grid.z, grid.y, grid.x), correlation) > threshold)] = BOWEL
    return tissue


def _draw_gas_pockets(rng, grid, body, tissue, z0) -> None:
    pockets = []
    for _ in range(int(rng.integers(4, 12))):
        phi = rng.uniform(-np.pi, np.pi)
        radius = rng.uniform(0.0, 0.8) * body.inner_radius(phi)
        centre = body.point(phi, radius, z0 + rng.uniform(-150, 60))
        pockets.append(Ellipsoid(centre, np.eye(3), rng.uniform(5, 18, size=3), lobulation=0.2, lobulation_mm=10.0, seed=child_seed(rng)))
    for pocket in pockets:
        gas = pocket.field(grid)
        if gas is not None:
            paint(tissue, gas[0], gas[1] < 1, GAS, over=(BOWEL, FAT))


def _draw_stomach(rng, grid, body, tissue, spleen_z) -> None:
    """Left upper quadrant, anterior and medial to the spleen: wall, fluid, and an anterior gas cap."""
    phi = -np.deg2rad(rng.uniform(20, 60))  # left and anterior
    centre = body.point(phi, rng.uniform(0.35, 0.6) * body.inner_radius(phi), spleen_z + rng.uniform(-10, 25))
    semi = np.array([rng.uniform(40, 65), rng.uniform(30, 45), rng.uniform(40, 60)])
    tilt = np.deg2rad(rng.uniform(-30, 30))
    wall = rng.uniform(3, 6) / semi.min()
    gas_level = centre[1] - rng.uniform(0.0, 0.6) * semi[1]  # supine: gas floats anteriorly (low y)
    axes = np.array([[np.cos(tilt), np.sin(tilt), 0.0], [-np.sin(tilt), np.cos(tilt), 0.0], [0.0, 0.0, 1.0]])
    shape = Ellipsoid(centre, axes, semi, lobulation=0.12, lobulation_mm=25.0, seed=child_seed(rng)).field(grid)
    if shape is None:
        return
    box, f = shape
    paint(tissue, box, f < 1, STOMACH_WALL, over=_CAVITY_FILL)
    inner = f < (1 - wall) ** 2
    paint(tissue, box, inner, STOMACH_FLUID, over=(STOMACH_WALL,))
    y = grid.coords(box)[1]
    paint(tissue, box, inner & (y < gas_level), GAS, over=(STOMACH_FLUID,))


def _draw_liver(rng, grid, body, tissue, z0) -> None:
    """Right lobe against the right wall, and a left lobe reaching across the midline anteriorly."""
    phi = np.pi + np.deg2rad(rng.uniform(-5, 25))  # right, slightly anterior
    semi = np.array([rng.uniform(70, 90), rng.uniform(70, 90), rng.uniform(70, 95)])
    centre = body.point(phi, body.inner_radius(phi) - 0.8 * semi[0], z0 + rng.uniform(10, 35))
    right = Ellipsoid(centre, np.eye(3), semi, lobulation=0.12, lobulation_mm=40.0, seed=child_seed(rng))
    left_centre = np.array([body.cx + rng.uniform(-10, 35), body.cy - rng.uniform(0.35, 0.55) * body.b, centre[2] + rng.uniform(0, 30)])
    left = Ellipsoid(
        left_centre,
        np.eye(3),
        np.array([rng.uniform(55, 80), rng.uniform(22, 35), rng.uniform(40, 60)]),
        lobulation=0.12,
        lobulation_mm=30.0,
        seed=child_seed(rng),
    )
    over = _CAVITY_FILL + (STOMACH_WALL, STOMACH_FLUID)
    for lobe in (right, left):
        shape = lobe.field(grid)
        if shape is not None:
            paint(tissue, shape[0], shape[1] < 1, LIVER, over=over)


def _draw_kidneys(rng, grid, body, tissue, spleen_z, spine) -> None:
    """Both kidneys in perirenal fat, with renal sinus fat at the anteromedial hilum; right one lower."""
    left_z = spleen_z - rng.uniform(30, 55)
    kidneys = []
    for side, z in ((1.0, left_z), (-1.0, left_z - rng.uniform(5, 25))):
        centre = np.array([body.cx + side * rng.uniform(55, 75), spine["y_body"] - rng.uniform(0, 20), z])
        beta, gamma = np.deg2rad(rng.uniform(10, 25)), np.deg2rad(rng.uniform(20, 60))
        u = unit([-side * np.sin(beta) * np.cos(gamma), np.sin(beta) * np.sin(gamma), np.cos(beta)])
        v = unit(np.cross(u, [0.0, 1.0, 0.0]))
        axes = np.array([u, v, np.cross(u, v)])
        semi = np.array([rng.uniform(48, 60), rng.uniform(24, 32), rng.uniform(18, 24)])
        kidney = Ellipsoid(centre, axes, semi, lobulation=0.06, lobulation_mm=30.0, seed=child_seed(rng), margin=1.3)
        sinus = Ellipsoid(centre + unit([-side, -0.6, 0.0]) * semi[1] * 0.55, axes, semi * np.array([0.45, 0.35, 0.4]))
        kidneys.append((kidney, sinus, rng.uniform(1.15, 1.5) ** 2))
    for kidney, sinus, halo in kidneys:
        shape = kidney.field(grid)
        if shape is None:
            continue
        box, f = shape
        paint(tissue, box, f < halo, FAT, over=_CAVITY_FILL + (LIVER,))
        paint(tissue, box, f < 1, KIDNEY, over=(FAT,))
        hilum = sinus.field(grid)
        if hilum is not None:
            paint(tissue, hilum[0], hilum[1] < 1, FAT, over=(KIDNEY,))


def _draw_spleen(rng, grid, body, tissue, spleen_z) -> np.ndarray:
    """A bent, lobulated ellipsoid against the left posterolateral wall; returns its top point (x, y, z)."""
    phi = np.deg2rad(rng.uniform(10, 42))  # 0 = patient left, 90 = posterior
    semi = np.array([rng.uniform(50, 65), rng.uniform(31, 40), rng.uniform(19, 25)])
    outward = np.array([np.cos(phi), np.sin(phi), 0.0])
    tangent = np.array([-np.sin(phi), np.cos(phi), 0.0])  # toward posterior and medial
    alpha = np.deg2rad(rng.uniform(20, 50))  # long axis: upper pole posteromedial, lower pole anterolateral
    u = np.cos(alpha) * np.array([0.0, 0.0, 1.0]) + np.sin(alpha) * tangent
    axes = np.array([u, np.cross(outward, u), outward])
    centre = body.point(phi, body.inner_radius(phi) - semi[2] - rng.uniform(0, 6), spleen_z)
    bend = (rng.uniform(0.3, 0.8) * semi[2] / semi[0] ** 2, rng.uniform(0.1, 0.5) * semi[2] / semi[1] ** 2)
    spleen = Ellipsoid(
        centre, axes, semi, bend=bend, lobulation=rng.uniform(0.05, 0.15), lobulation_mm=rng.uniform(20, 35), seed=child_seed(rng)
    )
    halo = rng.uniform(1.05, 1.3) ** 2  # a thin perisplenic fat plane where it borders the cavity
    hilum = Ellipsoid(centre - outward * semi[2] * rng.uniform(0.7, 1.0), axes, semi * np.array([0.25, 0.3, 0.45]))
    shape = spleen.field(grid)
    if shape is not None:
        box, f = shape
        paint(tissue, box, f < halo, FAT, over=_CAVITY_FILL)
        paint(tissue, box, f < 1, SPLEEN, over=_CAVITY_FILL + (STOMACH_WALL, STOMACH_FLUID, LIVER, KIDNEY))
        notch = hilum.field(grid)
        if notch is not None:
            paint(tissue, notch[0], notch[1] < 1, FAT, over=(SPLEEN,))
    return spleen.top_point()


def _draw_spine(rng, grid, body, tissue, spleen_z) -> dict[str, float]:
    """Vertebral column (z-invariant cross-section, discs along z), canal, posterior elements, back muscles."""
    y_body = body.cy + body.b - rng.uniform(85, 100)
    rx, ry = rng.uniform(20, 26), rng.uniform(16, 20)
    canal_y, canal_r = ry + rng.uniform(8, 11), rng.uniform(7, 10)
    muscle_x, muscle_y = rng.uniform(30, 38), canal_y + rng.uniform(15, 28)
    mrx, mry = rng.uniform(18, 25), rng.uniform(16, 24)
    shell = 1 - rng.uniform(2, 3.5) / min(rx, ry)
    arch_r, spinous_w, spinous_l = canal_r + rng.uniform(4, 6), rng.uniform(3, 5), canal_r + rng.uniform(25, 40)
    transverse_l = rng.uniform(28, 38)
    pitch, disc = rng.uniform(28, 36), rng.uniform(6, 10)
    disc_phase = rng.uniform(0, pitch)
    psoas_top = spleen_z - rng.uniform(40, 70)
    psoas_x, psoas_r = rx + rng.uniform(8, 15), rng.uniform(18, 28)

    x = grid.x[None, :] - body.cx
    y = grid.y[:, None] - y_body
    paraspinal = (((np.abs(x) - muscle_x) / mrx) ** 2 + ((y - muscle_y) / mry) ** 2) < 1
    vertebra = (x / rx) ** 2 + (y / ry) ** 2
    dcanal = np.hypot(x, y - canal_y)
    arch = (dcanal < arch_r) & (y > canal_y - canal_r * 0.5)
    spinous = (np.abs(x) < spinous_w) & (y > canal_y) & (y < canal_y + spinous_l)
    transverse = (np.abs(x) < transverse_l) & (np.abs(y - canal_y + canal_r * 0.3) < 4)
    bone2d = arch | spinous | transverse | (vertebra < 1)
    tissue[np.isin(tissue, (FAT, MUSCLE, BOWEL, GAS)) & paraspinal[None]] = MUSCLE
    tissue[:, bone2d] = CORTICAL_BONE
    tissue[:, vertebra < shell**2] = CANCELLOUS_BONE
    tissue[:, dcanal < canal_r] = CSF
    disc_z = ((grid.z - spleen_z - disc_phase) % pitch) < disc
    if disc_z.any():
        discs = tissue[disc_z]
        discs[:, vertebra < 1] = DISC
        tissue[disc_z] = discs
    zsel = grid.z < psoas_top  # psoas muscles, growing toward the pelvis below the kidneys
    if zsel.any():
        grow = np.clip((psoas_top - grid.z[zsel]) / 120.0, 0.15, 1.0)[:, None, None] * psoas_r
        psoas = ((np.abs(x) - psoas_x) ** 2)[None] + ((y + ry * 0.2) ** 2)[None] < grow**2
        sub = tissue[zsel]
        sub[psoas & np.isin(sub, (FAT, BOWEL, GAS))] = MUSCLE
        tissue[zsel] = sub
    return {"y_body": float(y_body), "ry": float(ry), "x": float(body.cx)}


def _draw_vessels(rng, grid, tissue, spine) -> None:
    """Aorta (left of midline) and IVC (right) in front of the spine, the whole length."""
    ra = rng.uniform(9, 14)
    aorta_x, aorta_gap = rng.uniform(5, 20), rng.uniform(2, 8)
    ivc_a, ivc_b = rng.uniform(10, 15), rng.uniform(6, 11)
    ivc_x, ivc_gap = rng.uniform(18, 30), rng.uniform(6, 15)
    x = grid.x[None, :] - spine["x"]
    y = grid.y[:, None] - spine["y_body"] + spine["ry"]
    aorta = np.hypot(x - aorta_x, y + ra + aorta_gap) < ra
    ivc = ((x + ivc_x) / ivc_a) ** 2 + ((y + ivc_b + ivc_gap) / ivc_b) ** 2 < 1
    tissue[(aorta | ivc)[None] & np.isin(tissue, _SOFT_ORGANS)] = VESSEL


def _draw_ribs(rng, grid, body, tissue, spleen_z) -> None:
    """Ribs within the muscle wall, sloping down anteriorly, above a costal margin; no anterior cartilage."""
    pitch, width, slope = rng.uniform(24, 34), rng.uniform(8, 12), rng.uniform(10, 25)
    phase = rng.uniform(0, pitch)
    margin_z = spleen_z - rng.uniform(40, 70)
    from_back = np.abs(np.angle(np.exp(1j * (body.theta - np.pi / 2))))  # 0 at the back, pi at the front
    margin = margin_z + 45.0 * from_back / np.pi  # the costal margin rises anteriorly
    zsel = grid.z > float(margin.min())
    if not zsel.any():
        return
    z = grid.z[zsel][:, None, None]
    band = ((z + slope * from_back[None] - phase) % pitch) < width
    rib = band & (z > margin[None]) & (from_back[None] < np.deg2rad(155))
    sub = tissue[zsel]
    sub[rib & (sub == WALL_MUSCLE)] = CORTICAL_BONE
    tissue[zsel] = sub


def _draw_thorax(rng, grid, body, tissue, spleen_top) -> None:
    """Diaphragm domes (the left one about at the top of the spleen), lung bases above, and the heart."""
    x_left, x_right = body.cx + rng.uniform(55, 90), body.cx - rng.uniform(55, 90)
    yd, curvature = body.cy + rng.uniform(0, 30), rng.uniform(120, 220)
    # the left dome passes from 5 mm below to 10 mm above the spleen's top
    z_left = spleen_top[2] + rng.uniform(-5, 10) + ((spleen_top[0] - x_left) ** 2 + (spleen_top[1] - yd) ** 2) / (2 * curvature)
    z_right = z_left + rng.uniform(-5, 20)
    thickness = rng.uniform(4, 7)
    heart = Ellipsoid(
        np.array([body.cx + rng.uniform(10, 35), body.cy - rng.uniform(15, 40), max(z_left, z_right) + rng.uniform(45, 65)]),
        np.eye(3),
        np.array([rng.uniform(55, 70), rng.uniform(45, 55), rng.uniform(50, 60)]),
    )
    dx = grid.x[None, :]
    dy2 = (grid.y[:, None] - yd) ** 2
    dome = np.maximum(
        z_left - ((dx - x_left) ** 2 + dy2) / (2 * curvature), z_right - ((dx - x_right) ** 2 + dy2) / (2 * curvature)
    ).astype(np.float32)
    zsel = grid.z > float(dome.min())
    if not zsel.any():
        return
    z = grid.z[zsel][:, None, None]
    sub = tissue[zsel]
    replaceable = np.isin(sub, _SOFT_ORGANS)
    sub[replaceable & (z > dome[None]) & (z < dome[None] + thickness)] = MUSCLE
    sub[replaceable & (z >= dome[None] + thickness)] = LUNG
    tissue[zsel] = sub
    shape = heart.field(grid)
    if shape is not None:
        paint(tissue, shape[0], shape[1] < 1, HEART, over=(LUNG, MUSCLE))
