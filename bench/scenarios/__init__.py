"""One module per scenario of issue 6; each exposes `async def run(ctx) -> ScenarioResult`."""
