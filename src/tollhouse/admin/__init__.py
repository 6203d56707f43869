"""The admin API's shared pieces: authentication and the error envelope."""
