/* streams_check: stream declarations, deletion and destroy from C, for
 * tests/test_native_streams.py. One command per run; every call's outcome is printed as
 * "name: CODE message", so the test reads what C saw and Python checks what it left.
 *
 *   streams_check URL create STREAM MAXLEN POLICY   simai_stream_create
 *   streams_check URL append STREAM COUNT TIMEOUT   COUNT float64 entries [i, i] (i = index)
 *   streams_check URL info STREAM                   simai_stream_info
 *   streams_check URL delete STREAM                 simai_stream_delete, then its info
 *   streams_check URL destroy                       simai_destroy, then calls on the handle
 *   streams_check URL group STREAM GROUP TIMEOUT    read as a group until the stream ends
 *   streams_check URL bad STREAM                    bad arguments: codes, nothing changed */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <simai.h>

static int say(const char *what, int rc)
{
    printf("%s: %s %s\n", what, simai_code_name(rc), rc ? simai_last_error() : "");
    return rc;
}

static void info(simai_store *s, const char *stream)
{
    simai_stream_state st;
    if (!say("info", simai_stream_info(s, stream, &st)))
        printf("state: length=%" PRId64 " start=%" PRId64 " dropped=%" PRId64
               " maxlen=%" PRId64 " policy=%d closed=%d\n",
               st.length, st.start, st.dropped, st.maxlen, (int)st.policy, (int)st.closed);
}

int main(int argc, char **argv)
{
    simai_store *s;
    const char *cmd = argc > 2 ? argv[2] : "";
    const char *stream = argc > 3 ? argv[3] : "s";
    int rc;
    if (argc < 3) {
        fprintf(stderr, "usage: streams_check URL COMMAND [ARGS]\n");
        return 2;
    }
    if (say("open", simai_open_url(argv[1], &s)))
        return 1;
    if (!strcmp(cmd, "create") && argc == 6) {
        say("create", simai_stream_create(s, stream, strtoll(argv[4], NULL, 10), argv[5]));
    } else if (!strcmp(cmd, "append") && argc == 6) {
        long count = strtol(argv[4], NULL, 10);
        double timeout = strtod(argv[5], NULL);
        for (long k = 0; k < count; k++) {
            simai_stream_state st;
            uint64_t n = 2;
            double v[2];
            int64_t index = -1;
            simai_stream_info(s, stream, &st);
            v[0] = v[1] = (double)st.length;
            rc = simai_append_array(s, stream, SIMAI_DTYPE_F64, 1, &n, v, 0, timeout, &index);
            say("append", rc);
            if (rc)
                break;
            printf("index: %" PRId64 "\n", index);
        }
    } else if (!strcmp(cmd, "info")) {
        info(s, stream);
    } else if (!strcmp(cmd, "delete")) {
        int existed = -1;
        say("delete", simai_stream_delete(s, stream, &existed));
        printf("existed: %d\n", existed);
        info(s, stream);
    } else if (!strcmp(cmd, "destroy")) {
        int exists = -1;
        say("destroy", simai_destroy(s));
        say("exists", simai_exists(s, "k", &exists));
        say("put", simai_put_json(s, "k", "1"));
        say("again", simai_destroy(s));
    } else if (!strcmp(cmd, "group") && argc == 6) {
        simai_info in;
        double v[64];
        int64_t i;
        say("position", simai_group_position(s, stream, argv[4], &i));
        while (!(rc = simai_group_get(s, stream, argv[4], &i, strtod(argv[5], NULL), v,
                                      sizeof v, &in)))
            printf("entry: %" PRId64 " %g\n", i++, v[0]);
        say("end", rc);
    } else if (!strcmp(cmd, "bad")) {
        uint64_t n = 2;
        double v[2] = {0, 0};
        float f[2];
        int64_t i = 0;
        say("policy", simai_stream_create(s, stream, 4, "drop_newest"));
        say("negative", simai_stream_create(s, stream, -1, "block"));
        say("rebound", simai_stream_create(s, stream, 7, "block"));
        say("repolicy", simai_stream_create(s, stream, 3, "block"));
        say("unbounded", simai_stream_create(s, stream, 0, NULL));
        say("null", simai_stream_create(s, NULL, 3, "block"));
        say("empty", simai_stream_delete(s, "", NULL));
        say("type", simai_group_get_array(s, stream, "typed", &i, 5, SIMAI_DTYPE_F32, 1, &n, f,
                                          0));
        say("shape", simai_group_get_array(s, stream, "typed", &i, 5, SIMAI_DTYPE_F64, 1,
                                           (uint64_t[]){3}, v, 0));
        rc = say("right", simai_group_get_array(s, stream, "typed", &i, 5, SIMAI_DTYPE_F64, 1,
                                                &n, v, 0));
        if (!rc)
            printf("typed: %" PRId64 " %g\n", i, v[0]);
        info(s, stream);
    } else {
        fprintf(stderr, "streams_check: bad command '%s'\n", cmd);
        simai_close(s);
        return 2;
    }
    simai_close(s);
    return 0;
}
