/*
 * group_file.c - the consumer-group file: its format, validation, the boot
 * it was written under, and opening and closing handles on it
 * (docs/design/groups.md; the data path is group.c).
 *
 * <topic folder>/groups/<group>.grp is created and opened through
 * region.c (0600, O_EXCL|O_NOFOLLOW, our uid, magic published last); every
 * header field is checked by qm__group_ctl_check(), a pure function over
 * the bytes, before anything else is read.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define GROUP_MAX_ENTRIES (UINT64_C(1) << 26)   /* 1 GiB of entries per file */

/* ----- layout ------------------------------------------------------------------ */
uint64_t qm__group_fingerprint(void) {
    const uint64_t parts[] = {
        qm__layout_fingerprint(), sizeof(qm_group_ctl_t), sizeof(qm_group_part_t),
        sizeof(qm_group_entry_t), offsetof(qm_group_ctl_t, partitions),
        offsetof(qm_group_ctl_t, entries_offset), offsetof(qm_group_ctl_t, boot_id),
        offsetof(qm_group_ctl_t, last_sweep_ns), offsetof(qm_group_ctl_t, reboots),
        offsetof(qm_group_part_t, committed), offsetof(qm_group_part_t, next_due),
        offsetof(qm_group_part_t, owner), QM_GROUP_SETTLED_OFFSET, QM_GROUP_PARTS_OFFSET,
        QM_GPOS_OFF_BITS, QM_GE_TAG_BITS, QM_GE_MAX_COUNT, QM_GROUP_MAX_PARTITIONS,
    };
    return qm__fingerprint_mix(parts, sizeof parts / sizeof parts[0]);
}

static uint64_t entries_offset(uint32_t partitions) {
    uint64_t end = QM_GROUP_PARTS_OFFSET + (uint64_t)partitions * QM_GROUP_PART_BYTES;
    return (end + 4095) & ~UINT64_C(4095);
}

uint64_t qm__group_file_size(uint32_t partitions, uint32_t window_log2) {
    if (partitions < 1 || partitions > QM_GROUP_MAX_PARTITIONS ||
        window_log2 < QM_GROUP_MIN_WINDOW_LOG2 || window_log2 > QM_GROUP_MAX_WINDOW_LOG2)
        return 0;
    uint64_t n = (uint64_t)partitions << window_log2;
    if (n > GROUP_MAX_ENTRIES) return 0;
    return entries_offset(partitions) + n * QM_GROUP_ENTRY_BYTES;
}

int qm__group_ctl_check(const void *image, uint64_t len, uint64_t file_size,
                        qm_group_config_t *cfg) {
    if (len < sizeof(qm_group_ctl_t)) return qm__fail(QM_ECORRUPT, "group header truncated");
    qm_group_ctl_t c;
    memcpy(&c, image, sizeof c);   /* one read of every field */
    const qm_header_t *h = &c.header;
    uint64_t magic = (uint64_t)atomic_load_explicit(&c.header.magic, memory_order_relaxed);
    if (magic == __builtin_bswap64(QM_MAGIC_GROUP))
        return qm__fail(QM_EINCOMPAT, "group written with the other byte order");
    if (magic != QM_MAGIC_GROUP)
        return qm__fail(QM_ECORRUPT, "bad group magic %#llx", (unsigned long long)magic);
    if (h->format_major != QM_FORMAT_MAJOR)
        return qm__fail(QM_EINCOMPAT, "group format %u.%u, this build reads %u.x",
                        h->format_major, h->format_minor, QM_FORMAT_MAJOR);
    if (h->layout_fingerprint != qm__group_fingerprint() || h->feature_flags != 0 ||
        h->object_kind != QM_KIND_GROUP)
        return qm__fail(QM_EINCOMPAT, "group layout, features or kind differ from this build");
    for (size_t i = 0; i < sizeof h->reserved / sizeof h->reserved[0]; i++)
        if (h->reserved[i]) return qm__fail(QM_EINCOMPAT, "reserved header words in use");
    if (c.flags & ~QM_GROUP_ORDERED) return qm__fail(QM_EINCOMPAT, "unknown group flags");
    uint64_t size = qm__group_file_size(c.partitions, c.window_log2);
    if (size == 0 || h->header_bytes != QM_HEADER_BYTES ||
        h->members_offset != QM_MEMBERS_OFFSET || h->member_slots != QM_MEMBER_SLOTS ||
        h->member_bytes != QM_MEMBER_BYTES || c.settled_offset != QM_GROUP_SETTLED_OFFSET ||
        c.parts_offset != QM_GROUP_PARTS_OFFSET || c.entries_offset != entries_offset(c.partitions) ||
        h->data_offset != QM_GROUP_PARTS_OFFSET || h->total_bytes != size ||
        h->data_bytes != size - QM_GROUP_PARTS_OFFSET || h->capacity_log2 != c.window_log2 ||
        size != file_size)
        return qm__fail(QM_ECORRUPT, "group dimensions, offsets or size do not match the format");
    cfg->partitions = c.partitions;
    cfg->window = UINT32_C(1) << c.window_log2;
    cfg->flags = c.flags;
    cfg->start = NULL;
    return QM_OK;
}


typedef struct format_arg {
    const qm_group_config_t *cfg;
    unsigned wlog2;
} format_arg_t;

static void group_format(uint8_t *base, uint64_t len, const void *arg) {
    const format_arg_t *fa = arg;
    const qm_group_config_t *cfg = fa->cfg;
    /* everything but the magic: a dead creator may have left bytes behind */
    memset(base + sizeof(uint64_t), 0, len - sizeof(uint64_t));
    qm_group_ctl_t *c = (qm_group_ctl_t *)base;
    qm_header_t *h = &c->header;
    h->format_major = QM_FORMAT_MAJOR;
    h->format_minor = QM_FORMAT_MINOR;
    h->header_bytes = QM_HEADER_BYTES;
    h->layout_fingerprint = qm__group_fingerprint();
    h->object_kind = QM_KIND_GROUP;
    h->creator_pid = (uint32_t)getpid();
    h->created_unix_ns = (uint64_t)qm__os_realtime_ns();
    h->total_bytes = len;
    h->members_offset = QM_MEMBERS_OFFSET;
    h->member_slots = QM_MEMBER_SLOTS;
    h->member_bytes = QM_MEMBER_BYTES;
    h->data_offset = QM_GROUP_PARTS_OFFSET;
    h->data_bytes = len - QM_GROUP_PARTS_OFFSET;
    h->capacity_log2 = fa->wlog2;
    c->partitions = cfg->partitions;
    c->window_log2 = fa->wlog2;
    c->flags = cfg->flags;
    c->settled_offset = QM_GROUP_SETTLED_OFFSET;
    c->parts_offset = QM_GROUP_PARTS_OFFSET;
    c->entries_offset = entries_offset(cfg->partitions);
    uint64_t id[2];
    qm__os_boot_id(id);
    atomic_store_explicit(&c->boot_id[0], id[0], memory_order_relaxed);
    atomic_store_explicit(&c->boot_id[1], id[1], memory_order_relaxed);
    qm_group_part_t *parts = (qm_group_part_t *)(base + QM_GROUP_PARTS_OFFSET);
    for (uint32_t p = 0; p < cfg->partitions; p++) {
        /* gen starts at 1: a zero (FREE) entry never carries a live tag */
        uint64_t pos = QM_GPOS(1, cfg->start ? cfg->start[p] : 0);
        atomic_store_explicit(&parts[p].cursor.pos, pos, memory_order_relaxed);
        atomic_store_explicit(&parts[p].committed.pos, pos, memory_order_relaxed);
        atomic_store_explicit(&parts[p].next_due, INT64_MAX, memory_order_relaxed);
    }
}

/* ----- open/close ---------------------------------------------------------------- */
/* <topic_dir>/groups, made 0700 when creating; refused unless a private
 * folder of ours (the partition log's folder rule). */
static int open_groups_dir(const char *topic_dir, qm_open_mode_t mode, int *out) {
    if (!topic_dir || !topic_dir[0]) return qm__fail(QM_EINVAL, "no topic folder given");
    int tfd;
    int rc = qm__dir_open(AT_FDCWD, topic_dir, QM_OPEN_ONLY, &tfd);
    if (rc) return rc;
    rc = qm__dir_open(tfd, "groups", mode, out);
    close(tfd);
    return rc;
}

static int config_check(const qm_group_config_t *cfg, unsigned *wlog2) {
    uint32_t w = cfg->window ? cfg->window : QM_GROUP_DEFAULT_WINDOW;
    if (w & (w - 1)) return qm__fail(QM_EINVAL, "window must be a power of two");
    unsigned lg = (unsigned)__builtin_ctz(w);
    if (qm__group_file_size(cfg->partitions, lg) == 0)
        return qm__fail(QM_EINVAL, "partitions must be 1..%u and window %u..%u, "
                                   "at most 2^26 entries in all",
                        QM_GROUP_MAX_PARTITIONS, 1u << QM_GROUP_MIN_WINDOW_LOG2,
                        1u << QM_GROUP_MAX_WINDOW_LOG2);
    if (cfg->flags & ~QM_GROUP_ORDERED) return qm__fail(QM_EINVAL, "unknown group flags");
    for (uint32_t p = 0; cfg->start && p < cfg->partitions; p++)
        if (cfg->start[p] > QM_GPOS_MAX_OFFSET)
            return qm__fail(QM_EINVAL, "start offset beyond 2^48");
    *wlog2 = lg;
    return QM_OK;
}

static void nothing_to_format(uint8_t *base, uint64_t len, const void *arg) {
    (void)base, (void)len, (void)arg;
}

int qm_group_open(const char *topic_dir, const char *group, qm_open_mode_t mode,
                  const qm_group_config_t *cfg, qm_group_t **out, int *created) {
    *out = NULL;
    if (created) *created = 0;
    int rc = qm_name_check(group);
    if (rc) return rc;
    if (!cfg && mode != QM_OPEN_ONLY) return qm__fail(QM_EINVAL, "no group configuration");
    format_arg_t fa = {cfg, 0};
    if (cfg && (rc = config_check(cfg, &fa.wlog2))) return rc;
    /* Without a configuration, a file whose creator died unpublished is
     * not re-created (size 0 fails): the group never existed. */
    qm_group_t *g = calloc(1, sizeof *g);
    if (!g) return -ENOMEM;
    qm_object_spec_t spec = {cfg ? qm__group_file_size(cfg->partitions, fa.wlog2) : 0,
                             QM_MAGIC_GROUP, cfg ? group_format : nothing_to_format, &fa,
                             &g->fault, QM_FAULT_FILE};
    char name[160];
    snprintf(name, sizeof name, "%s.grp", group);
    g->obj.fd = -1;
    g->mb.fd = -1;
    int dirfd = -1;
    rc = open_groups_dir(topic_dir, mode, &dirfd);
    if (rc) goto fail;
    rc = qm__object_open(dirfd, name, mode, &spec, &g->obj);
    close(dirfd);
    if (rc) goto fail;
    qm_group_config_t got;
    rc = qm__group_ctl_check(g->obj.base, g->obj.len, g->obj.len, &got);
    rc = qm__fault_check(&g->fault, "consumer group", rc);
    if (rc) goto fail;
    g->ctl = (qm_group_ctl_t *)g->obj.base;
    g->partitions = got.partitions;
    g->window = got.window;
    g->wlog2 = (unsigned)__builtin_ctz(got.window);
    g->flags = got.flags;
    g->settled = (_Atomic uint64_t *)(g->obj.base + QM_GROUP_SETTLED_OFFSET);
    g->parts = (qm_group_part_t *)(g->obj.base + QM_GROUP_PARTS_OFFSET);
    g->entries = (qm_group_entry_t *)(g->obj.base + entries_offset(g->partitions));
    g->mb.fd = g->obj.fd;
    g->mb.members = (qm_member_t *)(g->obj.base + QM_MEMBERS_OFFSET);
    g->mb.hwm = &g->ctl->members_hwm;
    g->mb.settle = qm__group_settle;
    g->mb.object = g;
    if (qm__gate_try_exclusive(g->mb.fd) == QM_OK) {   /* we are alone */
        uint64_t id[2];
        qm__os_boot_id(id);
        qm__group_expire_boot(g, id);
    }
    qm__registry_add(&g->mb);
    rc = qm__member_join(&g->mb);   /* turns an exclusive gate lock shared */
    /* the file was truncated while we read or joined it */
    if (!rc && (rc = qm__fault_check(&g->fault, "consumer group", QM_OK))) qm__member_leave(&g->mb);
    if (rc) {
        qm__registry_remove(&g->mb);
        goto fail;
    }
    if (created) *created = g->obj.created;
    *out = g;
    return QM_OK;
fail:
    qm__object_close(&g->obj);
    free(g);
    return rc;
}

void qm_group_close(qm_group_t *g) {
    if (!g) return;
    if (g->mb.slot) qm__group_settle(g, g->mb.slot, 0);   /* give back our leases and partitions */
    qm__registry_remove(&g->mb);
    qm__member_leave(&g->mb);
    qm__object_close(&g->obj);
    free(g);
}
