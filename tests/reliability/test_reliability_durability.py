"""``kill -9`` right after events were acknowledged: after a restart every acknowledged event is in the log."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import pytest

from recengine.data.events import read_sqlite_events
from tests.reliability import reliability_harness as rh
from tests.reliability.reliability_harness import Deployment

pytestmark = pytest.mark.reliability


def test_acknowledged_events_survive_kill_9(
    deployment: Deployment, spawn: list[rh.ServerProcess], tmp_path: Path
) -> None:
    port = rh.free_port()
    env = deployment.env()
    server = rh.ServerProcess(rh.serve_command(port), env, tmp_path / "server.log", port)
    spawn.append(server.start())
    users, items = deployment.users, deployment.items

    batches = [
        [
            {"user_id": users[(b * 7 + j) % len(users)], "item_id": items[(b * 13 + j) % len(items)],
             "type": "click", "event_id": f"kill9-{b}-{j}-{uuid.uuid4().hex[:8]}"}
            for j in range(5)
        ]
        for b in range(60)
    ]  # fmt: skip

    async def send_all() -> list[str]:
        acked: list[str] = []
        async with httpx.AsyncClient(base_url=server.base_url, timeout=5) as client:

            async def send(batch: list[dict[str, str]]) -> None:
                response = await client.post("/api/v1/events", json=batch)
                if response.status_code == 200:
                    acked.extend(response.json()["event_ids"])

            # 60 concurrent batches, then SIGKILL the moment the last acknowledgement is in.
            await asyncio.gather(*(send(b) for b in batches))
            server.kill()
        return acked

    acknowledged = asyncio.run(send_all())
    assert len(acknowledged) == 300, "every batch should have been acknowledged before the kill"

    restarted = rh.ServerProcess(rh.serve_command(port), env, tmp_path / "server2.log", port)
    spawn.append(restarted.start())
    stored = {e.event_id for e in read_sqlite_events(deployment.root / "events.sqlite3")}
    missing = set(acknowledged) - stored
    print(f"[kill -9] {len(acknowledged)} events acknowledged, {len(missing)} missing after restart")
    assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:3]}"

    # The restarted server knows them too: a retry of every batch is recognised as a duplicate.
    for batch in batches[:10]:
        body = httpx.post(restarted.base_url + "/api/v1/events", json=batch, timeout=5).json()
        assert body["accepted"] == 0 and body["duplicates"] == len(batch)
