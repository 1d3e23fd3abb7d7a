"""Where the benchmark images come from: CIFAR-10 (full or the bundled sample) or a folder of images.

Three sources are supported:

* the full CIFAR-10 in its original "python version" layout (``data/cifar-10-batches-py``,
  fetched with :func:`download_cifar10` or ``python -m storage download-cifar10``);
* the bundled sample of 5,085 real CIFAR-10 images (``data/cifar-10-sample``), tracked in
  git so that everything works offline and out of the box;
* any folder of images laid out as ``root/<class name>/<image file>`` (the torchvision
  ``ImageFolder`` convention), in any format and size Pillow reads.

:func:`load_source` picks one of them from a single string (what the CLI and the dashboard
pass around) and tells the two folder layouts apart by their content. Whenever the code
falls back to the sample instead of the full data set it says so, with a
:class:`SampleDataWarning` and a log line, so a benchmark is never silently run on less
data than the user thinks.

Each source is a module: :mod:`.cifar10` (loading, through a restricted unpickler),
:mod:`.cifar10_download` (the md5-checked download and its safe extraction),
:mod:`.image_folder` and :mod:`.folder_images` (a folder listed from its files' headers,
decoded chunk by chunk on all cores), :mod:`.sources` (detection by content), :mod:`.slices` (a source
listed without loading it, read one range at a time) and :mod:`.take`; this
package re-exports their public names.

The data folder is ``data/`` next to the ``storage`` package; set the environment
variable ``IMAGE_STORAGE_LAB_DATA`` to use another folder (the bundled sample always comes
from the project itself).
"""

from .cifar10 import (
    CIFAR10_ARCHIVE_NAME,
    CIFAR10_BATCH_FILES,
    CIFAR10_CLASS_NAMES,
    CIFAR10_DIR,
    CIFAR10_DIRNAME,
    CIFAR10_MD5,
    CIFAR10_URL,
    DOWNLOAD_COMMAND,
    SAMPLE_CIFAR10_DIR,
    SampleDataWarning,
    load_cifar10,
)
from .cifar10_download import download_cifar10
from .folder_images import FolderImages
from .image_folder import SkippedFilesWarning, list_image_folder, load_image_folder
from .locations import DATA_DIR, DATA_DIR_ENV, PROJECT_ROOT, data_dir
from .slices import SourceListing, list_source, read_slice
from .sources import DataSource, describe_available_sources, load_source
from .take import take

__all__ = [
    "CIFAR10_ARCHIVE_NAME",
    "CIFAR10_BATCH_FILES",
    "CIFAR10_CLASS_NAMES",
    "CIFAR10_DIR",
    "CIFAR10_DIRNAME",
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "DATA_DIR",
    "DATA_DIR_ENV",
    "DOWNLOAD_COMMAND",
    "PROJECT_ROOT",
    "SAMPLE_CIFAR10_DIR",
    "DataSource",
    "FolderImages",
    "SampleDataWarning",
    "SkippedFilesWarning",
    "SourceListing",
    "data_dir",
    "describe_available_sources",
    "download_cifar10",
    "list_image_folder",
    "list_source",
    "load_cifar10",
    "load_image_folder",
    "load_source",
    "read_slice",
    "take",
]
