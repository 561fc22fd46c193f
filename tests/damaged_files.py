"""Damaged contents to write into the files migpool reads (journal, simulated state, saved layouts, catalogs,
learned run times), for the tests that check each is refused or ignored as it should be."""

RANDOM_BYTES = bytes(range(128, 256)) * 2
DAMAGE = {
    "empty": b"",
    "truncated": b'{"gpus": [{"index": 0, "uu',
    "random bytes": RANDOM_BYTES,
    "null": b"null",
    "a list": b"[1, 2]",
}
