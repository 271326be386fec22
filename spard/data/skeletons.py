"""Skeletons of the file formats we read (docs/data.md), joint naming tables, and the root-relative
pose layout."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .dataset import Skeleton

# The 17 of the 32 Human3.6M joints that every GSPS-derived loader keeps, in their kept order.
H36M_KEPT = [0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27]

H36M = Skeleton(
    names=["hip", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
           "spine", "thorax", "neck", "head", "left_shoulder", "left_elbow", "left_wrist",
           "right_shoulder", "right_elbow", "right_wrist"],
    parents=[-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15],  # shoulders hang from the thorax
    left=[4, 5, 6, 11, 12, 13],
    right=[1, 2, 3, 14, 15, 16],
)

# The 32 points of a Human3.6M file, named as in the dataset's own motion-capture skeleton ("Site" is the
# end point of the joint before it); the kept joints are Site 15 (the head top) and 16 named joints.
H36M_FILE_NAMES = [
    "Hips", "RightUpLeg", "RightLeg", "RightFoot", "RightToeBase", "Site", "LeftUpLeg", "LeftLeg", "LeftFoot",
    "LeftToeBase", "Site", "Spine", "Spine1", "Neck", "Head", "Site", "LeftShoulder", "LeftArm", "LeftForeArm",
    "LeftHand", "LeftHandThumb", "Site", "L_Wrist_End", "Site", "RightShoulder", "RightArm", "RightForeArm",
    "RightHand", "RightHandThumb", "Site", "R_Wrist_End", "Site"]


@dataclass(frozen=True)
class Naming:
    """How one motion-capture convention names the joints of one of our skeletons (for BVH files).

    `joints` lists every joint name of the convention (it tells the conventions apart); `mapping` gives,
    for each of our joints, the joint whose origin it is, or `<joint>_end` for the End Site of `<joint>`.
    """

    name: str
    joints: tuple[str, ...]
    mapping: dict[str, str]


def _h36m_naming(name: str, joints: str, mapped: str) -> Naming:
    """A naming of the 17 kept Human3.6M joints, `mapped` listed in H36M.names order."""
    return Naming(name, tuple(joints.split()), dict(zip(H36M.names, mapped.split(), strict=True)))


# The H36M joints are points of these skeletons: hip = the root, hips/knees/ankles = thigh/shin/foot starts,
# spine = top of the lower back, thorax = base of the neck, neck = base of the head, head = top of the head,
# shoulders/elbows/wrists = upper-arm/forearm/hand starts.
BVH_NAMINGS = {"h36m": [
    # the BVH files converted from the CMU motion-capture database (ASF bone -> BVH joint names)
    _h36m_naming("CMU", "Hips LHipJoint LeftUpLeg LeftLeg LeftFoot LeftToeBase RHipJoint RightUpLeg RightLeg "
                 "RightFoot RightToeBase LowerBack Spine Spine1 Neck Neck1 Head LeftShoulder LeftArm LeftForeArm "
                 "LeftHand LeftFingerBase LeftHandIndex1 LThumb RightShoulder RightArm RightForeArm RightHand "
                 "RightFingerBase RightHandIndex1 RThumb",
                 "Hips RightUpLeg RightLeg RightFoot LeftUpLeg LeftLeg LeftFoot Spine Neck Head Head_end "
                 "LeftArm LeftForeArm LeftHand RightArm RightForeArm RightHand"),
    # the same database with its ASF bone names (a BVH joint is named after the bone that starts there)
    _h36m_naming("CMU ASF", "root lhipjoint lfemur ltibia lfoot ltoes rhipjoint rfemur rtibia rfoot rtoes "
                 "lowerback upperback thorax lowerneck upperneck head lclavicle lhumerus lradius lwrist lhand "
                 "lfingers lthumb rclavicle rhumerus rradius rwrist rhand rfingers rthumb",
                 "root rfemur rtibia rfoot lfemur ltibia lfoot upperback lowerneck head head_end "
                 "lhumerus lradius lwrist rhumerus rradius rwrist"),
    # Human3.6M's own skeleton (H36M_FILE_NAMES without the Sites)
    _h36m_naming("Human3.6M", " ".join(n for n in H36M_FILE_NAMES if n != "Site"),
                 "Hips RightUpLeg RightLeg RightFoot LeftUpLeg LeftLeg LeftFoot Spine1 Neck Head Head_end "
                 "LeftArm LeftForeArm LeftHand RightArm RightForeArm RightHand"),
]}

# The 22 SMPL body joints of BeLFusion's AMASS preprocessing (all kept).
AMASS = Skeleton(
    names=["pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
           "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
           "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
           "left_wrist", "right_wrist"],
    parents=[-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19],
    left=[1, 4, 7, 10, 13, 16, 18, 20],
    right=[2, 5, 8, 11, 14, 17, 19, 21],
)


# No joint of a human body lies farther than this from its root (pelvis), in metres: the span of raised arms
# over the head of a tall person is about 1.4. Data beyond it is in other units (millimetres, centimetres).
MAX_REACH = 2.5


def root_relative(positions: np.ndarray, where: str) -> np.ndarray:
    """World positions `[L, J+1, 3]` -> the clip layout: joint 0 absolute, joints 1..J minus joint 0, float32.

    Refused in one line: positions that are not floats (integers are millimetres, as some converters write),
    NaN or inf, and bodies larger than MAX_REACH metres (other units).
    """
    if positions.dtype.kind != "f":
        raise ValueError(f"{where} holds {positions.dtype} positions, expected floats in metres (integers are "
                         "usually millimetres): convert to metres as floats")
    with np.errstate(over="ignore", invalid="ignore"):  # values beyond float32 become inf, refused below
        poses = np.array(positions, dtype=np.float64)  # [L, J+1, 3] (a copy): the joints' offsets from the root
        poses[:, 1:] -= poses[:, :1]                   # taken before rounding, exact however far the root is
        poses = poses.astype(np.float32)
    if not np.isfinite(poses).all():
        raise ValueError(f"{where} contains NaN or inf positions: repair or drop this sequence")
    with np.errstate(over="ignore"):  # a square beyond float32: inf, refused below
        reach = float(np.linalg.norm(poses[:, 1:], axis=-1).max(initial=0.0))
    if reach > MAX_REACH:
        raise ValueError(f"{where} has a joint {reach:.4g} from the root, more than a body's {MAX_REACH} m: "
                         "positions must be in metres (divide millimetres by 1000)")
    return poses
