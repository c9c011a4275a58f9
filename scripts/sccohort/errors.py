"""The one exception type for input a user must fix, and what reading a damaged file raises."""

import zlib


class InputError(ValueError):
    """Bad input: the message names the file, sample, column or value and says what to do."""


# What the readers of a user's file raise when the file is damaged, truncated or of another format
# than its name says: OSError (h5py, gzip.BadGzipFile), EOFError (a gzip stream cut short:
# "Compressed file ended before the end-of-stream marker was reached"), zlib.error (corrupt
# deflate data), ValueError (UnicodeDecodeError, parse errors), KeyError/IndexError (a missing
# group or column). A reader turns these into an InputError naming the file.
READ_ERRORS = (OSError, EOFError, zlib.error, ValueError, KeyError, IndexError)
