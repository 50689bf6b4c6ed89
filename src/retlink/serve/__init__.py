"""`retlink serve`: the OpenAI-compatible chat endpoint, the attack endpoint and the web page."""
