"""The orchestrator's side of worker processes: how each is made (the spawner, the fork
server), its handle (:class:`~axon.pool.process.WorkerProcess`: connection, frames, heartbeats,
kill and stop), what it prints, and the link between the two. The child side is
:mod:`axon.worker`."""
