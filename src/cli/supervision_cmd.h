/* supervision_cmd.h - `jiankang supervision export`: the day's online visits and prescriptions
 * as NDJSON for the provincial internet-medical supervision platform (docs/internals/rx.md). */
#ifndef JK_CLI_SUPERVISION_CMD_H
#define JK_CLI_SUPERVISION_CMD_H

/* `jiankang supervision export --date YYYY-MM-DD [--out FILE] [--config FILE] [--db URL]
 * [--keys PATH]`, argv[0] being "supervision". Returns the exit status: 0, 1 on failure, 2 for
 * bad arguments. */
int jk_cli_supervision(int argc, char **argv);

#endif
