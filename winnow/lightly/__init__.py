"""`/v1/`: the wire protocol of Lightly's Python client (`lightly==1.5.26`), adapted onto Winnow's services.

A team that uses Lightly's client sets `LIGHTLY_SERVER_LOCATION` to Winnow's address and keeps its
scripts. The contract this package answers is `lightly-client-contract.md`; the short version:

- Plain Django views, CSRF-exempt, authenticated by `?token=<Winnow API token>`; every view starts
  from `curation.access`, so another user's dataset is a 404 (`DATASET_UNKNOWN`) and a viewer's
  write a 403. Error bodies are `{"code": <Lightly ApiErrorCode>, "error": <text>}`.
- Responses carry exactly the camelCase keys of Lightly's models (they forbid extra keys);
  timestamps are integer milliseconds; creates answer 201.
- The client retries 400, 408, 409, 429 and 5xx on paginated GETs, the sample PUT and the signed
  PUT for about 31 s, so those endpoints answer bad input with 422 (never retried); the others with 400.
- Names: Lightly's client rejects dataset names outside `^[a-zA-Z0-9][a-zA-Z0-9 _-]+$` and tag
  names outside `^[a-zA-Z0-9][a-zA-Z0-9 .:;=@_-]+$` (at least 3 characters), even in responses,
  where one such name breaks a whole list. Winnow allows them in its own API, so `/v1/` keeps such
  datasets and tags off: they are left out of lists and are a 404 by id. They can still be named
  as a parent or operand (prevTagId, tag arithmetic, selection), which returns no name.
- Bit i of a bitmask is the i-th entry of `GET .../mappings`, the samples in idx order (see positions.py).
- `initial-tag` holds every sample, as Lightly's does: samples registered here are added to it.

The package owns no sampling, tag or metadata logic: it calls curation.services, curation.tagging,
curation.embeddings, curation.bitmask and sampling.services.
"""
