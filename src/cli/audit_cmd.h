/* audit_cmd.h - `jiankang audit verify` and `jiankang keys init|public`. */
#ifndef JK_CLI_AUDIT_CMD_H
#define JK_CLI_AUDIT_CMD_H

#include "core/config.h"

/* `jiankang audit SUBCOMMAND`: args[0..n_args) are the words after the options ("verify").
 * verify checks the audit chain and checkpoints of cfg->db with the key of cfg->keys (the
 * key file, or a PEM public key). Returns the exit status: 0 when the trail is intact, 1
 * when a link is broken ("first broken link at seq N: ..."), 2 when it cannot be checked. */
int jk_cli_audit(const struct jk_config *cfg, char *const *args, int n_args);

/* `jiankang keys init|public`: init creates the key file cfg->keys (never replacing one) and
 * prints the platform public key; public prints the public key of an existing key file.
 * Returns the exit status: 0 on success, 1 on failure, 2 for a bad subcommand. */
int jk_cli_keys(const struct jk_config *cfg, char *const *args, int n_args);

#endif
