"""Backend integrations: make QUIC servers issue CIDs pesigitg can route."""
