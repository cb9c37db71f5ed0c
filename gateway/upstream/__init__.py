"""Talking to tiers: our HTTP/1.1 client, the backends, and vetting of what tiers send."""
