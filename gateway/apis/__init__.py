"""The public APIs: each turns its own request into the one internal request and shapes the answer back."""
