"""The round plan, made on the driver between ingest and generation: targets T, their S, the swap-source identity j,
ids and seeds (config, inputs, rules, dedup, clusters, stream, gather), and its plan files read by Ray Data
(files, datasource, ray_features)."""
