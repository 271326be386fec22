"""Forward kinematics of a joint tree: local rotations and bone offsets -> world positions and rotations."""
from __future__ import annotations

import numpy as np


def forward_kinematics(parents: np.ndarray, offsets: np.ndarray, rotations: np.ndarray,
                       root: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World positions and rotations of every joint in every frame.

    parents    [J] int: parent index per joint, -1 for the root; parents come before children
    offsets    [J, 3]: a joint's origin in its parent's frame (the root's is unused)
    rotations  [L, J, 3, 3]: each joint's rotation relative to its parent (the root's: to the world);
               identity for fixed joints and end sites
    root       [L, 3]: the root's world position
    returns    positions [L, J, 3], world_rotations [L, J, 3, 3]

    A child's origin is `positions[parent] + world_rotations[parent] @ offsets[child]`, and its world
    rotation is `world_rotations[parent] @ rotations[child]`.
    """
    parents = np.asarray(parents)
    offsets, rotations, root = (np.asarray(a, dtype=np.float64) for a in (offsets, rotations, root))
    frames, joints = rotations.shape[:2]
    if parents.shape != (joints,) or offsets.shape != (joints, 3) or rotations.shape != (frames, joints, 3, 3) \
            or root.shape != (frames, 3):
        raise ValueError(f"forward_kinematics: expected parents [J], offsets [J, 3], rotations [L, J, 3, 3], "
                         f"root [L, 3]; got {list(parents.shape)}, {list(offsets.shape)}, {list(rotations.shape)}, "
                         f"{list(root.shape)}")
    if not all(-1 <= p < j for j, p in enumerate(parents.tolist())) or (parents < 0).sum() != 1 or parents[0] != -1:
        raise ValueError(f"forward_kinematics: parents {parents.tolist()} must list the root (-1) first and each "
                         "parent before its children")
    positions = np.empty((frames, joints, 3))  # [L, J, 3]
    world = np.empty((frames, joints, 3, 3))  # [L, J, 3, 3]
    positions[:, 0], world[:, 0] = root, rotations[:, 0]
    for j in range(1, joints):
        p = parents[j]
        positions[:, j] = positions[:, p] + world[:, p] @ offsets[j]
        world[:, j] = world[:, p] @ rotations[:, j]
    return positions, world
