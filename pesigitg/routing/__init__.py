"""The routing domain: the QUIC-LB codec, the route config (``lb.toml``), Maglev, the
compiled route table and the reference routing decision. No I/O, no daemon state."""
