import hashlib
import os

from coding.checksums import file_sha256


def test_blockwise_hash_equals_the_hash_of_the_whole_file(tmp_path):
    data = os.urandom(3 * (1 << 20) + 17)  # three full blocks and a partial one
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert file_sha256(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()
