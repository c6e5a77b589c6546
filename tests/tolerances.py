"""The error measure and bounds every numerical test uses: relative error
‖out − ref‖ / ‖ref‖ at most 1e-4 in float32 and 1e-2 in bfloat16."""
import numpy as np

F32_TOL = 1e-4
BF16_TOL = 1e-2


def rel_err(out, ref) -> float:
    """‖out − ref‖ / ‖ref‖, in float64."""
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))
