// streams_cpp: consumer groups, stream declarations, deletion and destroy through simai.hpp,
// for tests/test_native_streams.py.
//
//   streams_cpp URL read STREAM GROUP TIMEOUT   a group_reader<double> until the stream ends:
//                                               "entry: INDEX V0 V1 ..." per entry
//   streams_cpp URL admin STREAM                create/delete/bad input: "name: CODE"
//   streams_cpp URL destroy                     destroy, then a call: "name: CODE"
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <simai.hpp>

// Run f; print "name: SIMAI_OK" or the code of the simai::error it threw.
template <class F> static void attempt(const char *name, F f)
{
    try {
        f();
        std::printf("%s: SIMAI_OK\n", name);
    } catch (const simai::error &e) {
        std::printf("%s: %s %s\n", name, simai_code_name(e.code()), e.what());
    }
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        std::fprintf(stderr, "usage: streams_cpp URL COMMAND [ARGS]\n");
        return 2;
    }
    try {
        simai::store s(argv[1]);
        std::string cmd = argv[2], stream = argc > 3 ? argv[3] : "s";
        if (cmd == "read" && argc == 6) {
            simai::group_reader<double> reader(s, stream, argv[4], std::atof(argv[5]));
            while (auto entry = reader.next()) {
                std::printf("entry: %lld", static_cast<long long>(reader.index()));
                for (double v : entry->data)
                    std::printf(" %g", v);
                std::printf("\n");
            }
            std::printf("position: %lld\n",
                        static_cast<long long>(s.group_position(stream, argv[4])));
        } else if (cmd == "admin") {
            attempt("create", [&] { s.create_stream(stream, 2, "drop_oldest"); });
            attempt("same", [&] { s.create_stream(stream, 2, "drop_oldest"); });
            attempt("other", [&] { s.create_stream(stream, 2, "block"); });
            attempt("policy", [&] { s.create_stream(stream, 2, "sometimes"); });
            attempt("negative", [&] { s.create_stream(stream, -2); });
            for (int i = 0; i < 3; i++)
                s.append(stream, std::vector<double>{double(i)});
            simai_stream_state st = s.stream_info(stream);
            std::printf("state: length=%lld start=%lld dropped=%lld\n",
                        static_cast<long long>(st.length), static_cast<long long>(st.start),
                        static_cast<long long>(st.dropped));
            std::int64_t i = 0;
            attempt("type", [&] { s.group_get<float>(stream, "g", i, 1.0); });
            attempt("typed", [&] { s.group_get<double>(stream, "g", i, 1.0); });
            std::printf("typed index: %lld\n", static_cast<long long>(i));
            std::printf("deleted: %d\n", int(s.delete_stream(stream)));
            std::printf("deleted again: %d\n", int(s.delete_stream(stream)));
        } else if (cmd == "destroy") {
            attempt("destroy", [&] { s.destroy(); });
            attempt("exists", [&] { s.exists("k"); });
        } else {
            std::fprintf(stderr, "streams_cpp: bad command '%s'\n", cmd.c_str());
            return 2;
        }
    } catch (const simai::error &e) {
        std::printf("error: %s %s\n", simai_code_name(e.code()), e.what());
        return 1;
    }
    return 0;
}
