/* protect_api.h - FHIR JSON responses with sealed identity and phone numbers opened or masked
 * (auth/protect.h) on their way out. */
#ifndef JK_API_PROTECT_API_H
#define JK_API_PROTECT_API_H

#include <stddef.h>

#include "core/rc.h"

struct jk_http_req;

/* Responds with the FHIR JSON text body[0..len) (which must live until the request ends),
 * every sealed value in it rewritten by jk_protect_view. Shows every number in clear for now;
 * the reader's role will choose (JK_SHOW_IDENTITY, JK_SHOW_PHONE). JK_ENOMEM. */
jk_rc jk_api_send_fhir(struct jk_http_req *rq, int status, const char *body, size_t len);

#endif
