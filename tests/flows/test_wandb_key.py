"""The W&B key from a Prefect Secret block, read where the train flow reads it: inside an async flow."""
import asyncio

from flows import wandb_sink


def test_secret_block_is_read_inside_an_async_flow(prefect_harness, monkeypatch):
    from prefect import flow
    from prefect.blocks.system import Secret

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    Secret(value="not-a-real-key-123").save(wandb_sink.SECRET_BLOCK, overwrite=True)

    @flow
    async def reads_key():
        return wandb_sink._api_key()

    try:
        assert asyncio.run(reads_key()) == "not-a-real-key-123"
    finally:
        Secret.delete(wandb_sink.SECRET_BLOCK)
