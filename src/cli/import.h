/* import.h - `jiankang import`: bulk loading of Bundles, resources and NDJSON files. */
#ifndef JK_CLI_IMPORT_H
#define JK_CLI_IMPORT_H

#include "core/config.h"

/* Imports every file named by paths[0..n_paths) (a directory stands for the *.json and
 * *.ndjson files under it), with jobs files at a time (0: one per core), into the database of
 * cfg, which it migrates first. Progress and problems go to standard error, the summary to
 * standard output (see docs/import.md). Returns the exit status: 0 when every file was
 * imported, 1 when some file failed or the database could not be opened. */
int jk_cli_import(const struct jk_config *cfg, char *const *paths, int n_paths, long jobs);

#endif
