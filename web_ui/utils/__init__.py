"""The API client and the pieces the pages share."""
