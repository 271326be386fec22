"""Rotations as w-first unit quaternions `[..., 4]` = (w, x, y, z), and as matrices `[..., 3, 3]`.

Every function broadcasts over leading axes. A matrix acts on column vectors (`R @ p`); the quaternion
product `a * b` is the rotation `b` followed by `a`, like the matrix product `A @ B`. Quaternions `q` and
`-q` are the same rotation; `quat_log` picks the rotation vector of angle in [0, pi].
"""
from __future__ import annotations

import numpy as np

AXES = {"x": 0, "y": 1, "z": 2}
TINY = 1e-12  # below this rotation angle (or vector part) the small-angle limits are used


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product `a * b`.  [..., 4], [..., 4] -> [..., 4]"""
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], -1)


def quat_inverse(q: np.ndarray) -> np.ndarray:
    """Inverse of a unit quaternion (its conjugate).  [..., 4] -> [..., 4]"""
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def quat_normalize(q: np.ndarray) -> np.ndarray:
    """`q / |q|`.  [..., 4] -> [..., 4]"""
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def quat_log(q: np.ndarray) -> np.ndarray:
    """Rotation vector (unit axis times angle, angle in [0, pi]) of a unit quaternion.  [..., 4] -> [..., 3]"""
    q = np.where(q[..., :1] < 0, -q, q)
    s = np.linalg.norm(q[..., 1:], axis=-1, keepdims=True)  # sin(angle / 2)
    angle = 2 * np.arctan2(s, q[..., :1])
    return q[..., 1:] * np.where(s > TINY, angle / np.maximum(s, TINY), 2.0)


def quat_exp(v: np.ndarray) -> np.ndarray:
    """Unit quaternion of a rotation vector (axis times angle).  [..., 3] -> [..., 4]"""
    angle = np.linalg.norm(v, axis=-1, keepdims=True)
    scale = np.where(angle > TINY, np.sin(angle / 2) / np.maximum(angle, TINY), 0.5)
    return np.concatenate([np.cos(angle / 2), v * scale], -1)


def quat_slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray | float) -> np.ndarray:
    """Shortest-path spherical interpolation: `a` at t = 0, `b` (or `-b`) at t = 1.

    `t` broadcasts against `a[..., :1]`.  [..., 4], [..., 4], [..., 1] -> [..., 4]
    """
    b = np.where(np.sum(a * b, -1, keepdims=True) < 0, -b, b)
    return quat_normalize(quat_multiply(a, quat_exp(t * quat_log(quat_multiply(quat_inverse(a), b)))))


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrices of unit quaternions.  [..., 4] -> [..., 3, 3]"""
    w, x, y, z = np.moveaxis(q, -1, 0)
    m = np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                  2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                  2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1)
    return m.reshape(q.shape[:-1] + (3, 3))


def quat_about_axis(axis: np.ndarray, angle: np.ndarray | float) -> np.ndarray:
    """Rotation by `angle` radians (right-handed) about a unit `axis`.  [..., 3], [...] -> [..., 4]"""
    half = np.asarray(angle, dtype=float)[..., None] / 2  # [..., 1]
    vector = np.sin(half) * np.asarray(axis, dtype=float)  # [..., 3]
    return np.concatenate([np.broadcast_to(np.cos(half), vector.shape[:-1] + (1,)), vector], -1)


def axis_matrix(axis: str, angle: np.ndarray) -> np.ndarray:
    """Rotation matrices about the coordinate axis "x", "y" or "z".  [...] -> [..., 3, 3]"""
    i = AXES[axis]
    j, k = (i + 1) % 3, (i + 2) % 3  # (j, k) turn like (x, y) about z
    cos, sin = np.cos(angle), np.sin(angle)
    m = np.zeros(np.shape(angle) + (3, 3))
    m[..., i, i] = 1.0
    m[..., j, j], m[..., j, k] = cos, -sin
    m[..., k, j], m[..., k, k] = sin, cos
    return m


def euler_to_matrix(angles: np.ndarray, order: str, degrees: bool = False) -> np.ndarray:
    """Matrices of Euler angles `[..., 3]`, angle n about axis `order[n]` -> `[..., 3, 3]`.

    Upper-case `order` ("ZXY", BVH's channel order) is intrinsic: each rotation turns about the axes
    already turned by the ones before, `R = R0 @ R1 @ R2`. Lower-case ("zxy") is extrinsic: about the
    fixed axes, `R = R2 @ R1 @ R0`. This is scipy's `Rotation.from_euler(order, angles)` convention.
    """
    if len(order) != 3 or not (order.isupper() or order.islower()) or set(order.lower()) - set(AXES):
        raise ValueError(f"Euler order {order!r}: expected three of x, y, z, all upper-case (intrinsic) "
                         "or all lower-case (extrinsic)")
    angles = np.asarray(angles, dtype=float)
    if angles.shape[-1:] != (3,):
        raise ValueError(f"Euler angles: expected [..., 3], got {list(angles.shape)}")
    if degrees:
        angles = np.deg2rad(angles)
    r0, r1, r2 = (axis_matrix(axis, angles[..., n]) for n, axis in enumerate(order.lower()))
    return r0 @ r1 @ r2 if order.isupper() else r2 @ r1 @ r0
