"""Immutable dataset releases: a verified, self-contained snapshot of a run's accepted triples.

Layout under a releases root (default `<output_root>/releases`):
    <name>/release.json                  written last: a release exists once this file does
    <name>/README.md                     dataset card (Hugging Face YAML header + prose)
    <name>/manifests/triples/...         release manifest (run triple + split + file facts), commit markers
    <name>/manifests/lineage/...         the run's lineage rows for the released rounds
    _pool/images/<aa>/<sha256>.png       every image any release names, content-addressed, shared by all
                                         releases of this root (publish/image_pool.py); a release's
                                         manifest names them `../_pool/images/...` (format 1 releases kept
                                         their own `<name>/images/`, still readable)
    _claims/<name>.json                  exclusive-create marker: whoever creates it owns the name
    _staging/<name>-<uuid>/              where a local release is built before one atomic rename

A name is claimed with an exclusive create, so of two concurrent creates one wins and the other fails with
ReleaseExistsError. Images go into the pool hash-checked (one task per run manifest file; tasks run in
parallel on Ray Data through pipeline.publish_on_ray), the manifest is written in batches, and on a local
filesystem the finished folder is published by a single rename. A release is self-contained together with
its releases root's pool: copy `<name>/` and `_pool/` together.

Modules, one job each:
  read     names, errors, opening and listing published releases (`Release`), a file's digest
  worker   the create task: one run manifest file -> split-closed triples, images in the pool, manifest shards
  create   the create driver: claim the name, run the tasks, lineage, stats, card, release.json, publish
  verify   re-hash every file of a release against release.json and its manifest
  diff     triples added/removed between two releases, split moves, QC score shifts
  schema   the release manifest and export schemas, `ReleaseConfig`
  stats    release statistics and the run's QC summary for release.json
  cli      `ciep release create|verify|diff|list`
"""
