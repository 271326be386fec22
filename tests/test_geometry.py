"""spard.geometry: quaternion algebra, Euler angles and forward kinematics on small cases worked by hand."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from spard.geometry import (euler_to_matrix, forward_kinematics, quat_about_axis, quat_exp, quat_inverse, quat_log,
                            quat_multiply, quat_normalize, quat_slerp, quat_to_matrix)

X, Y, Z = np.eye(3)
IDENTITY = np.array([1.0, 0.0, 0.0, 0.0])
RZ90 = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # x -> y, y -> -x
H = np.sqrt(0.5)


def random_quats(n: int, seed: int = 0) -> np.ndarray:
    return quat_normalize(np.random.default_rng(seed).normal(size=(n, 4)))


def test_quaternion_units_multiply_like_hamilton():
    i, j, k = np.eye(4)[1:]
    np.testing.assert_array_equal(quat_multiply(i, j), k)
    np.testing.assert_array_equal(quat_multiply(j, i), -k)
    np.testing.assert_array_equal(quat_multiply(i, i), -IDENTITY)
    np.testing.assert_array_equal(quat_multiply(IDENTITY, k), k)


def test_rotation_about_an_axis():
    q = quat_about_axis(Z, np.pi / 2)
    np.testing.assert_allclose(q, [H, 0, 0, H], atol=1e-15)
    np.testing.assert_allclose(quat_to_matrix(q), RZ90, atol=1e-15)
    np.testing.assert_allclose(quat_to_matrix(quat_about_axis(X, np.pi)), np.diag([1.0, -1.0, -1.0]), atol=1e-15)
    many = quat_about_axis(Y, np.array([[0.0], [np.pi]]))  # angles [2, 1] -> [2, 1, 4]
    np.testing.assert_allclose(many, [[[1, 0, 0, 0]], [[0, 0, 1, 0]]], atol=1e-15)


def test_matrices_agree_with_scipy():
    q = random_quats(20)
    np.testing.assert_allclose(quat_to_matrix(q), Rotation.from_quat(q[:, [1, 2, 3, 0]]).as_matrix(), atol=1e-14)


def test_composition_and_inverse():
    a, b = random_quats(10, 1), random_quats(10, 2)
    np.testing.assert_allclose(quat_to_matrix(quat_multiply(a, b)), quat_to_matrix(a) @ quat_to_matrix(b), atol=1e-14)
    np.testing.assert_allclose(quat_multiply(a, quat_inverse(a)), np.broadcast_to(IDENTITY, a.shape), atol=1e-15)
    np.testing.assert_allclose(quat_to_matrix(quat_inverse(a)), np.swapaxes(quat_to_matrix(a), -1, -2), atol=1e-15)
    # broadcasting over leading axes: [5, 1, 4] * [1, 3, 4] -> [5, 3, 4]
    grid = quat_multiply(a[:5, None], b[None, :3])
    assert grid.shape == (5, 3, 4)
    np.testing.assert_array_equal(grid[4, 2], quat_multiply(a[4], b[2]))


def test_log_and_exp():
    np.testing.assert_allclose(quat_log(quat_about_axis(Z, 0.5)), [0, 0, 0.5], atol=1e-15)
    np.testing.assert_allclose(quat_log(-quat_about_axis(Z, 0.5)), [0, 0, 0.5], atol=1e-15)  # -q: same rotation
    np.testing.assert_array_equal(quat_exp(np.zeros(3)), IDENTITY)
    np.testing.assert_array_equal(quat_log(IDENTITY), np.zeros(3))
    v = np.random.default_rng(3).uniform(-1.7, 1.7, (50, 3))  # angles below pi
    np.testing.assert_allclose(quat_log(quat_exp(v)), v, atol=1e-13)
    q = random_quats(50, 4)
    back = quat_exp(quat_log(q))
    np.testing.assert_allclose(back * np.sign(back[:, :1] * q[:, :1]), q, atol=1e-14)  # q up to sign
    np.testing.assert_allclose(quat_to_matrix(quat_exp(v)), Rotation.from_rotvec(v).as_matrix(), atol=1e-14)


def test_slerp_endpoints_and_midpoint():
    a, b = quat_about_axis(Z, 0.2), quat_about_axis(Z, 1.4)
    np.testing.assert_allclose(quat_slerp(a, b, 0.0), a, atol=1e-15)
    np.testing.assert_allclose(quat_slerp(a, b, 1.0), b, atol=1e-15)
    np.testing.assert_allclose(quat_slerp(a, b, 0.5), quat_about_axis(Z, 0.8), atol=1e-15)
    np.testing.assert_allclose(quat_slerp(a, -b, 0.25), quat_about_axis(Z, 0.5), atol=1e-15)  # the short way round
    # 3 -> 359 degrees about x goes through 0, not 181
    mid = quat_slerp(quat_about_axis(X, np.radians(3)), quat_about_axis(X, np.radians(359)), 0.5)
    np.testing.assert_allclose(quat_to_matrix(mid), quat_to_matrix(quat_about_axis(X, np.radians(1))), atol=1e-14)
    t = np.linspace(0, 1, 5)[:, None]  # [5, 1] against a [4]
    steps = quat_slerp(a, b, t)
    np.testing.assert_allclose(steps, quat_about_axis(Z, 0.2 + 1.2 * t[:, 0]), atol=1e-15)


def test_euler_angles_by_hand():
    np.testing.assert_allclose(euler_to_matrix([90, 0, 0], "ZXY", degrees=True), RZ90, atol=1e-15)
    # intrinsic ZXY: first 90 about z, then 90 about the turned x (the old y): x ends up on y, z on x
    np.testing.assert_allclose(euler_to_matrix([90, 90, 0], "ZXY", degrees=True),
                               [[0, 0, 1], [1, 0, 0], [0, 1, 0]], atol=1e-15)
    # extrinsic zxy: first 90 about z, then 90 about the fixed x: x ends up on z
    np.testing.assert_allclose(euler_to_matrix([90, 90, 0], "zxy", degrees=True),
                               [[0, -1, 0], [0, 0, -1], [1, 0, 0]], atol=1e-15)


@pytest.mark.parametrize("order", ["".join(p) for p in itertools.product("xyz", repeat=3) if p[0] != p[1] != p[2]])
def test_euler_orders_agree_with_scipy(order):
    angles = np.random.default_rng(5).uniform(-180, 180, (4, 2, 3))
    for o in (order, order.upper()):
        expected = Rotation.from_euler(o, angles.reshape(-1, 3), degrees=True).as_matrix().reshape(4, 2, 3, 3)
        np.testing.assert_allclose(euler_to_matrix(angles, o, degrees=True), expected, atol=1e-14)


@pytest.mark.parametrize("order", ["ZXy", "ZX", "ZXW", "zz"])
def test_euler_order_must_be_three_axes_of_one_kind(order):
    with pytest.raises(ValueError, match="Euler order"):
        euler_to_matrix([0.0, 0.0, 0.0], order)


def test_two_link_arm_bent_90_degrees():
    parents, offsets = [-1, 0, 1], np.array([[0.0, 0, 0], [1, 0, 0], [1, 0, 0]])  # shoulder, elbow, hand
    rotations = np.broadcast_to(np.eye(3), (2, 3, 3, 3)).copy()
    rotations[:, 1] = RZ90  # the elbow bends 90 degrees about z
    rotations[1, 0] = RZ90  # frame 1: the whole arm turns too
    root = np.array([[0.0, 0, 0], [5, 0, 0]])
    positions, world = forward_kinematics(parents, offsets, rotations, root)
    np.testing.assert_allclose(positions[0], [[0, 0, 0], [1, 0, 0], [1, 1, 0]], atol=1e-15)
    np.testing.assert_allclose(positions[1], [[5, 0, 0], [5, 1, 0], [4, 1, 0]], atol=1e-15)
    np.testing.assert_allclose(world[0, 2], RZ90, atol=1e-15)
    np.testing.assert_allclose(world[1, 2], RZ90 @ RZ90, atol=1e-15)


def test_branching_chain_by_hand():
    # pelvis -> spine -> head, pelvis -> hip -> knee; the spine bends 90 degrees about x (y -> z)
    parents = [-1, 0, 1, 0, 3]
    offsets = np.array([[0.0, 0, 0], [0, 1, 0], [0, 0.5, 0], [0.2, 0, 0], [0, -1, 0]])
    rotations = np.broadcast_to(np.eye(3), (1, 5, 3, 3)).copy()
    rotations[0, 1] = euler_to_matrix([90, 0, 0], "XYZ", degrees=True)
    rotations[0, 3] = euler_to_matrix([0, 0, 90], "XYZ", degrees=True)  # the hip turns 90 about z: -y -> x
    positions, _ = forward_kinematics(parents, offsets, rotations, np.array([[1.0, 2.0, 3.0]]))
    expected = [[1, 2, 3], [1, 3, 3], [1, 3, 3.5], [1.2, 2, 3], [2.2, 2, 3]]
    np.testing.assert_allclose(positions[0], expected, atol=1e-15)


def test_kinematics_agrees_with_quaternions_on_random_chains():
    rng = np.random.default_rng(6)
    parents = [-1, 0, 1, 2, 1, 4]
    offsets = rng.normal(size=(6, 3))
    quats = random_quats(3 * 6, 7).reshape(3, 6, 4)
    positions, world = forward_kinematics(parents, offsets, quat_to_matrix(quats), rng.normal(size=(3, 3)))
    for j, p in enumerate(parents[1:], start=1):  # each bone keeps its length and points along the rotated offset
        chain = quats[:, 0]
        for link in {1: [], 2: [1], 3: [1, 2], 4: [1], 5: [1, 4]}[j]:
            chain = quat_multiply(chain, quats[:, link])
        np.testing.assert_allclose(positions[:, j] - positions[:, p], quat_to_matrix(chain) @ offsets[j], atol=1e-14)
        np.testing.assert_allclose(world[:, j], quat_to_matrix(quat_multiply(chain, quats[:, j])), atol=1e-14)


def test_kinematics_refuses_bad_trees_and_shapes():
    eye = np.broadcast_to(np.eye(3), (1, 3, 3, 3))
    with pytest.raises(ValueError, match="before its children"):
        forward_kinematics([-1, 2, 0], np.zeros((3, 3)), eye, np.zeros((1, 3)))
    with pytest.raises(ValueError, match="before its children"):
        forward_kinematics([-1, -1, 0], np.zeros((3, 3)), eye, np.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"offsets \[J, 3\]"):
        forward_kinematics([-1, 0, 1], np.zeros((2, 3)), eye, np.zeros((1, 3)))
