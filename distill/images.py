"""Opening one image file of a dataset or calibration folder: a file the decoder cannot read is
one line naming it, also when a DataLoader worker met it."""
import sys
from pathlib import Path

from models.errors import RecipeError


class UnreadableImage(RecipeError):
    """An image file that does not decode. torch re-raises an exception of a DataLoader worker in
    the main process with the worker's traceback as its message; the last line, this error's own,
    is what is kept."""

    def __init__(self, message):
        lines = [line for line in str(message).strip().splitlines() if line.strip()]
        if len(lines) > 1:
            last = lines[-1]
            marker = f'{type(self).__name__}: '
            message = last.split(marker, 1)[1] if marker in last else last
        super().__init__(message)


def pil_open():
    """PIL's own Image.open. Importing ultralytics replaces it with one that, on a file PIL cannot
    identify, installs a package (pi-heif) and retries: not for a file in a dataset folder."""
    from PIL import Image
    patches = sys.modules.get('ultralytics.utils.patches')
    if patches is not None and Image.open is getattr(patches, 'image_open', None):
        return patches._image_open
    return Image.open


def open_rgb(path):
    """The image at `path` as RGB; UnreadableImage naming the file otherwise."""
    from PIL import Image
    try:
        with pil_open()(path) as image:
            return image.convert('RGB')
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        text = str(e).strip().splitlines()
        raise UnreadableImage(f'{Path(path)}: not a readable image ({text[0][:120] if text else type(e).__name__}); '
                              f'remove or replace the file') from None
