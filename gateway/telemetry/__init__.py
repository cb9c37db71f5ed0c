"""What the gateway reports: metrics, the access log, savings, token counts, the status page."""
