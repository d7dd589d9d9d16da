"""Key-shaped values of the vendor tests: long enough to be found if they leak, obviously fake."""

ALPACA_KEY_ID = "PKTESTKEYID0000000001"
ALPACA_SECRET = "test-secret-Zq8vN3xK1mP5rT7wY2bD4fH6jL9"
ALPHAVANTAGE_KEY = "test-key-AV0Q7WX2ZK9L"
FINNHUB_KEY = "test-key-fh-c0ffee1234abcd"
