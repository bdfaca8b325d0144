import asyncio
import os

import pytest

from swarmd.daemon.control import ControlServer, query_status
from swarmd.errors import DaemonError


async def test_status_round_trip_over_a_real_unix_socket(tmp_path):
    path = tmp_path / "control.sock"
    server = ControlServer(path, lambda: {"round": 3, "phase": "train"})
    await server.start()
    try:
        assert os.stat(path).st_mode & 0o777 == 0o600
        st = await asyncio.to_thread(query_status, path)
        assert st == {"round": 3, "phase": "train"}
        # a malformed request gets a refusal, and the server keeps answering afterwards
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b"garbage\n")
        await writer.drain()
        assert b"not JSON" in await reader.readline()
        writer.close()
        assert (await asyncio.to_thread(query_status, path))["round"] == 3
    finally:
        await server.stop()
    assert not path.exists()


def test_no_daemon_is_a_named_error(tmp_path):
    with pytest.raises(DaemonError, match="no daemon control socket"):
        query_status(tmp_path / "missing.sock")
