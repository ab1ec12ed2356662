"""Production ingestion: find the relevant data in a MongoDB database and propose how to decode it.

:mod:`kairos.ingest.inspect` proposes a collection mapping from sampled documents;
:mod:`kairos.ingest.cli` is ``kairos ingest``. The change-stream reader itself is an event store:
:mod:`kairos.stores.mongo_store`.
"""
