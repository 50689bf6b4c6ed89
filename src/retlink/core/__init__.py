"""The foundation every other layer imports: types, errors, the image-network registry and the
config machinery (strict models, YAML files, paths). It imports nothing else of retlink."""
