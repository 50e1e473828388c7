/* user_cmd.h - `jiankang user`: add, change the password of, lock, unlock, re-enrol the second
 * factor of, and list accounts; and the demo accounts for `jiankang demo`. */
#ifndef JK_CLI_USER_CMD_H
#define JK_CLI_USER_CMD_H

#include <stdio.h>

#include "store/store.h"

/* Runs `jiankang user ...`; argv[0] is "user". It reads its own options (--config, --db,
 * --rules, --role, --org, --link, --password-stdin). Returns the exit status: 0 done, 1 the
 * operation failed (no such account, name taken, database), 2 a usage error. */
int jk_cli_user(int argc, char **argv);

/* Creates or resets the demo accounts (jk_account_create_demo) on db, under the rules of
 * jk_security_rules_path(), and prints them with their passwords (and second-factor secrets)
 * on out. Returns 0, or 1 after printing why on standard error. */
int jk_cli_demo_accounts(jk_store *db, FILE *out);

#endif
