"""HTTP routes, thin: parse the request, call one service of `arkiv`, shape the answer."""
