/* nwc/options.h — typed option schema and option values.
 *
 * A plugin describes each option it accepts with an nwc_option_spec (type, default, bounds,
 * choices, doc). The host validates a pipeline's stage table against that schema before creating
 * the instance, then passes the values as an nwc_options array. Values are a tagged union. */
#pragma once
#include "nwc/abi.h"

NWC_EXTERN_C_BEGIN

/* Option types; explicit, append-only. */
#define NWC_OPT_BOOL 1u
#define NWC_OPT_INT 2u
#define NWC_OPT_FLOAT 3u
#define NWC_OPT_STRING 4u
#define NWC_OPT_ENUM 5u /* a string restricted to spec.choices */
#define NWC_OPT_INT_LIST 6u
#define NWC_OPT_FLOAT_LIST 7u
/* PATH: a string naming a file; the host resolves it relative to the pipeline file. */
#define NWC_OPT_PATH 8u

/* Option flags. */
#define NWC_OPTF_REQUIRED 0x1u          /* no default: the pipeline must set it */
#define NWC_OPTF_AFFECTS_BITSTREAM 0x2u /* recorded in the container; decoding needs it */
#define NWC_OPTF_EXPERIMENTAL 0x4u

typedef struct nwc_value {
  uint32_t type;  /* NWC_OPT_* */
  uint32_t count; /* element count for *_LIST types, else 0 */
  union {
    int64_t i;         /* BOOL (0/1), INT */
    double f;          /* FLOAT */
    const char *s;     /* STRING, ENUM, PATH (NUL-terminated UTF-8) */
    const int64_t *il; /* INT_LIST */
    const double *fl;  /* FLOAT_LIST */
  } u;
} nwc_value;

typedef struct nwc_option_spec {
  const char *key;            /* snake_case, unique within the plugin */
  uint32_t type;              /* NWC_OPT_* */
  uint32_t flags;             /* NWC_OPTF_* */
  nwc_value default_value;    /* ignored when NWC_OPTF_REQUIRED */
  double min;                 /* inclusive bounds for INT/FLOAT and list elements; */
  double max;                 /* min > max means unbounded */
  const char *const *choices; /* ENUM: the allowed strings */
  uint32_t choice_count;
  uint32_t reserved;
  const char *unit; /* "bits", "columns", ... or NULL */
  const char *doc;  /* one or two sentences for `nwc plugins show` */
} nwc_option_spec;

typedef struct nwc_option {
  const char *key;
  nwc_value value;
} nwc_option;

/* A set of option values. Every key is one of the plugin's spec keys and every value has the
 * spec's type; the host guarantees this for create(). Missing keys take their default. */
typedef struct nwc_options {
  uint32_t struct_size;
  uint32_t count;
  const nwc_option *items;
} nwc_options;

NWC_EXTERN_C_END
