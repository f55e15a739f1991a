"""Validates JSON samples against OpenAI's published schemas (the extract in
../shared/reference/openai-chat-schemas.json), with the `jsonschema` package.

Usage: validate_openai_schemas.py SCHEMAS_JSON SAMPLES_JSON
SAMPLES_JSON is a list of [schema_name, value]. Prints each failure; exits 1 if any.
"""
import json
import sys

from jsonschema import Draft202012Validator


def main():
    schemas = json.load(open(sys.argv[1]))
    samples = json.load(open(sys.argv[2]))
    root = {"components": schemas["components"]}
    failures = 0
    for name, value in samples:
        validator = Draft202012Validator({"$ref": f"#/components/schemas/{name}", **root})
        for error in validator.iter_errors(value):
            failures += 1
            path = "/".join(str(p) for p in error.absolute_path)
            print(f"{name} at /{path}: {error.message}")
    print(f"{len(samples)} samples, {failures} failures")
    sys.exit(1 if failures else 0)


main()
