/* Built with `cc pkgconfig.c $(pkg-config --cflags --libs simai)`: puts and gets one value. */
#include <stdio.h>
#include <string.h>

#include "simai.h"

int main(int argc, char **argv)
{
    simai_store *s;
    char buf[16];
    size_t n;
    if (argc != 2 || simai_open_url(argv[1], &s) || simai_put_bytes(s, "pc/x", "found", 5) ||
        simai_get_bytes(s, "pc/x", buf, sizeof buf, &n) || n != 5 || memcmp(buf, "found", 5)) {
        fprintf(stderr, "%s\n", simai_last_error());
        return 1;
    }
    simai_close(s);
    printf("ok %s\n", simai_version());
    return 0;
}
