"""Reading new camera frames with a trained detector, and the detector that travels.

`load_reader(path)` loads an exported reader (`billetjax.read.reader`: StableHLO + weights + JSON,
run with JAX and numpy alone); `read_frames(reader, folder, out_dir)` reads a folder of frames
with the import's preprocessing and writes the readings, COCO results, Label Studio and CVAT
pre-labels, the frames to label first and a gallery (`billetjax.read.outputs`, docs/reading.md).
`python -m billetjax.read` runs it from the command line. The export itself
(`billetjax.read.export`) needs the training stack; nothing imported here does.
"""

from billetjax.read.pipeline import ReadOptions, detect_frames, read_frames
from billetjax.read.reader import Reader, load_reader

__all__ = ["ReadOptions", "Reader", "detect_frames", "load_reader", "read_frames"]
