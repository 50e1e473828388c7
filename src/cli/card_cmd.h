/* card_cmd.h - `jiankang card codes`: valid dynamic QR codes of a health card, minted with
 * the key file, for load tests and for checking a desk's scanner. */
#ifndef JK_CLI_CARD_CMD_H
#define JK_CLI_CARD_CMD_H

#include "core/config.h"

/* `jiankang card codes CARD COUNT [TTL_SECONDS]`: prints COUNT codes of the active card CARD
 * (its id or its number), one per line, each valid for TTL_SECONDS (at most, and by default,
 * card.code.ttl_seconds) and usable once, recorded in cfg->db as issued (as GET
 * /api/cards/{id}/qr records them). Needs the key file cfg->keys (never creates one). Returns
 * the exit status: 0, 1 on failure, 2 for bad arguments. */
int jk_cli_card(const struct jk_config *cfg, char *const *args, int n_args);

#endif
