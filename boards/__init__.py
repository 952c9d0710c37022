"""Board and microphone-array profiles: JSON data files plus their loader/validator.

Arrays live in `boards/arrays/<name>.json`, boards in `boards/boards/<name>.json`; names are unique
across both, so `--board` accepts either (a board resolves to its default array). See
`boards.profiles` for the file schema and `tympan boards list | show NAME` for the bundled set.
"""

from boards.profiles import (
    SPEED_OF_SOUND_M_S,
    ArrayProfile,
    BoardProfile,
    array_from_dict,
    board_from_dict,
    derive_geometry,
    kind_of,
    list_profiles,
    load_array,
    load_board,
    resolve,
)

__all__ = [
    "SPEED_OF_SOUND_M_S",
    "ArrayProfile",
    "BoardProfile",
    "array_from_dict",
    "board_from_dict",
    "derive_geometry",
    "kind_of",
    "list_profiles",
    "load_array",
    "load_board",
    "resolve",
]
