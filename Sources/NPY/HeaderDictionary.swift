/// The header dictionary of a `.npy` file, a Python literal such as
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (8, 64), }`: parsed strictly (the three
/// keys, each once; quoted strings, True/False, a tuple of non-negative integers), tolerant of
/// spacing, key order, trailing commas and the padding after the closing brace.
struct HeaderDictionary {
    var descr: String
    var fortranOrder: Bool
    var shape: [Int]

    init(_ text: String, path: String) throws {
        var p = Parser(chars: Array(text.unicodeScalars), path: path)
        var descr: String?, fortran: Bool?, shape: [Int]?
        try p.expect("{")
        while true {
            p.skipSpace()
            if p.peek == "}" { p.index += 1; break }
            let key = try p.string()
            try p.expect(":")
            switch key {
            case "descr":
                guard descr == nil else { throw p.error("duplicate key 'descr'") }
                descr = try p.string()
            case "fortran_order":
                guard fortran == nil else { throw p.error("duplicate key 'fortran_order'") }
                fortran = try p.bool()
            case "shape":
                guard shape == nil else { throw p.error("duplicate key 'shape'") }
                shape = try p.tuple()
            default:
                throw p.error("unexpected key '\(key)' in the header")
            }
            p.skipSpace()
            if p.peek == "," { p.index += 1; continue }
            try p.expect("}")
            break
        }
        p.skipSpace()
        guard p.index == p.chars.count else { throw p.error("unexpected text after the header dictionary") }
        guard let descr, let fortran, let shape else {
            throw NPYError(path, "malformed header: it must name 'descr', 'fortran_order' and 'shape'")
        }
        self.descr = descr
        self.fortranOrder = fortran
        self.shape = shape
    }

    private struct Parser {
        let chars: [Unicode.Scalar]
        let path: String
        var index = 0

        var peek: Unicode.Scalar? { index < chars.count ? chars[index] : nil }

        func error(_ message: String) -> NPYError { NPYError(path, "malformed header: \(message)") }

        mutating func skipSpace() {
            while let c = peek, c == " " || c == "\t" || c == "\n" || c == "\r" { index += 1 }
        }

        mutating func expect(_ c: Unicode.Scalar) throws {
            skipSpace()
            guard peek == c else { throw error("expected '\(c)'") }
            index += 1
        }

        mutating func string() throws -> String {
            skipSpace()
            guard let quote = peek, quote == "'" || quote == "\"" else { throw error("expected a quoted string") }
            index += 1
            var s = ""
            while let c = peek, c != quote { s.unicodeScalars.append(c); index += 1 }
            guard peek == quote else { throw error("unterminated string") }
            index += 1
            return s
        }

        mutating func bool() throws -> Bool {
            skipSpace()
            for (word, value) in [("True", true), ("False", false)] {
                let w = Array(word.unicodeScalars)
                if index + w.count <= chars.count, Array(chars[index..<(index + w.count)]) == w {
                    index += w.count
                    return value
                }
            }
            throw error("expected True or False")
        }

        mutating func tuple() throws -> [Int] {
            try expect("(")
            var values: [Int] = []
            while true {
                skipSpace()
                if peek == ")" { index += 1; return values }
                var digits = ""
                while let c = peek, ("0"..."9").contains(c) { digits.unicodeScalars.append(c); index += 1 }
                if peek == "L" { index += 1 }  // Python 2 longs
                guard let v = Int(digits) else { throw error("expected a non-negative integer in the shape") }
                values.append(v)
                skipSpace()
                if peek == "," { index += 1; continue }
                try expect(")")
                return values
            }
        }
    }
}
