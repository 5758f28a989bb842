// check_cpp: the C++ side of tests/test_native_clients.py (simai.hpp). Usage: check_cpp URL
#include <cstdio>
#include <string>
#include <vector>

#include "simai.hpp"

static int failed = 0;

static void expect(bool ok, const char *what)
{
    if (!ok) {
        std::fprintf(stderr, "failed: %s\n", what);
        failed = 1;
    }
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    try {
        simai::store s(argv[1]);
        s.put("cpp/field", std::vector<double>{1, 2, 3, 4, 5, 6}, {2, 3});
        auto back = s.get<double>("cpp/field");
        expect(back.shape == simai::shape_t{2, 3} && back.data[5] == 6, "get<double>");
        {
            simai::view v = s.get_view("cpp/field");
            expect(v.data<double>()[4] == 5 && v.shape() == simai::shape_t{2, 3}, "view");
        }
        s.put_json("cpp/meta", R"({"step": 3})");
        expect(s.get_json("cpp/meta") == R"({"step": 3})", "json");
        auto from_python = s.get<float>("p/cpp");
        expect(from_python.shape == simai::shape_t{2, 2} && from_python.data[3] == 3.5f,
               "what Python put");
        expect(s.keys("cpp/") == std::vector<std::string>{"cpp/field", "cpp/meta"}, "keys");
        expect(s.remove("cpp/meta") && !s.exists("cpp/meta"), "remove");
        s.append("cpp/stream", std::vector<std::int32_t>{7, 8});
        expect(s.stream_view("cpp/stream", 0, 1.0).data<std::int32_t>()[1] == 8, "stream");
        try {
            s.get<double>("cpp/missing");
            expect(false, "a missing key throws");
        } catch (const simai::error &e) {
            std::printf("missing %d %s\n", e.code(), e.what());
        }
        try {
            s.get<float>("cpp/field");
            expect(false, "another dtype throws");
        } catch (const simai::error &e) {
            expect(e.code() == SIMAI_ERR_TYPE, "another dtype is SIMAI_ERR_TYPE");
        }
    } catch (const simai::error &e) {
        std::fprintf(stderr, "unexpected: %s\n", e.what());
        return 1;
    }
    if (!failed)
        std::printf("ok\n");
    return failed;
}
