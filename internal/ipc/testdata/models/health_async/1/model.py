import asyncio


class TritonPythonModel:
    def execute(self, requests):
        return []

    async def is_ready(self):
        await asyncio.sleep(0)
        return 0
