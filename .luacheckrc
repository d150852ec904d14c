std = "lua54"
max_line_length = 120
include_files = {
   "lua/**/*.lua",
   "bench/*.lua",
   "examples/*.lua",
   "spec/**/*.lua",
   "rockspec/*.rockspec",
   "scripts/*.lua",
   "tests/**/*.lua",
   "bin/backendctl",
   ".busted",
   ".luacheckrc",
}
files["spec/**/*.lua"] = { std = "+busted" }
files["rockspec/*.rockspec"] = { std = "rockspec" }
files[".luacheckrc"] = { std = "luacheckrc" }
