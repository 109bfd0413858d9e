"""Local execution modes of the concurry_ray actor protocol: sync, asyncio, thread, process."""
