# toml 0.9.4: a table header without its closing bracket leaves one element after
# split(']]', 1) and loads() reads line[1] (issue #156); the fix raises
# TomlDecodeError.
import toml

print(toml.loads("[[source]\nverify_ssl = false\n"))
