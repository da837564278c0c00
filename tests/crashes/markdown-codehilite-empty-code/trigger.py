# Markdown 3.5.1: codehilite's tree processor unescapes block[0].text of every
# <pre><code>, which is None for an empty <code> inserted by another extension
# (issue #1405).
import xml.etree.ElementTree as etree

import markdown
from markdown import extensions, treeprocessors


class AddEmptyCode(treeprocessors.Treeprocessor):
    def run(self, root):
        etree.SubElement(etree.SubElement(root, "pre"), "code")


class AddEmptyCodeExtension(extensions.Extension):
    def extendMarkdown(self, md):
        md.treeprocessors.register(AddEmptyCode(md), "add-empty-code", 40)


print(repr(markdown.markdown("# Hello", extensions=["codehilite", AddEmptyCodeExtension()])))
