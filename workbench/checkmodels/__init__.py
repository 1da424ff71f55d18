"""The check models: an ASR (`asr_model`, `asr_train`) and a speaker-embedding model
(`speaker_model`, `speaker_train`) that the workbench trains itself, so that search results can be
re-checked by models the search never optimised (Llasa §5). `workbench.verifiers` scores with
them (`workbench-asr`, `workbench-speaker`); this package builds, trains and loads them."""
