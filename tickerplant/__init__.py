"""tickerplant: kdb+/q-style tick system."""
