"""Rotations and forward kinematics in numpy float64, broadcast over leading axes.

    rotations   w-first unit quaternions (product, inverse, log/exp, slerp, matrices), axis-angle, Euler angles
    kinematics  forward_kinematics(parents, offsets, rotations, root) -> positions, world rotations
"""
from .kinematics import forward_kinematics
from .rotations import (euler_to_matrix, quat_about_axis, quat_exp, quat_inverse, quat_log, quat_multiply,
                        quat_normalize, quat_slerp, quat_to_matrix)

__all__ = ["euler_to_matrix", "forward_kinematics", "quat_about_axis", "quat_exp", "quat_inverse", "quat_log",
           "quat_multiply", "quat_normalize", "quat_slerp", "quat_to_matrix"]
