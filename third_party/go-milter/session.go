package milter

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/textproto"
	"runtime/debug"
	"strings"
	"time"
)

var errCloseSession = errors.New("Stop current milter processing")

// maxPacketSize limits the command byte and payload before allocation.
const maxPacketSize = 1 << 20

// milterSession keeps session state during MTA communication
type milterSession struct {
	server   *Server
	actions  OptAction
	protocol OptProtocol
	conn     net.Conn
	out      *bufio.Writer // modifications and the response leave in one write
	headers  textproto.MIMEHeader
	macros   map[string]string
	backend  Milter
}

// ReadPacket reads incoming milter packet
func (c *milterSession) ReadPacket() (*Message, error) {
	return readPacket(c.conn, 0)
}

func readPacket(conn net.Conn, timeout time.Duration) (*Message, error) {
	if timeout != 0 {
		conn.SetReadDeadline(time.Now().Add(timeout))
		defer conn.SetReadDeadline(time.Time{})
	}

	// read packet length
	var head [4]byte
	if _, err := io.ReadFull(conn, head[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = io.EOF
		}
		return nil, err
	}
	length := binary.BigEndian.Uint32(head[:])
	if length == 0 {
		return nil, errors.New("milter: invalid zero-length packet")
	}
	if length > maxPacketSize {
		return nil, fmt.Errorf("milter: packet length %d exceeds %d bytes", length, maxPacketSize)
	}

	// read packet data
	data := make([]byte, length)
	if _, err := io.ReadFull(conn, data); err != nil {
		return nil, err
	}

	// prepare response data
	message := Message{
		Code: data[0],
		Data: data[1:],
	}

	return &message, nil
}

// WritePacket queues a milter response packet; HandleMilterCommands
// flushes after each command.
func (m *milterSession) WritePacket(msg *Message) error {
	var head [5]byte
	binary.BigEndian.PutUint32(head[:4], uint32(len(msg.Data)+1))
	head[4] = msg.Code
	m.out.Write(head[:])
	_, err := m.out.Write(msg.Data)
	return err
}

func writePacket(conn net.Conn, msg *Message, timeout time.Duration) error {
	if timeout != 0 {
		conn.SetWriteDeadline(time.Now().Add(timeout))
		defer conn.SetWriteDeadline(time.Time{})
	}

	buffer := bufio.NewWriter(conn)

	// calculate and write response length
	length := uint32(len(msg.Data) + 1)
	if err := binary.Write(buffer, binary.BigEndian, length); err != nil {
		return err
	}

	// write response code
	if err := buffer.WriteByte(msg.Code); err != nil {
		return err
	}

	// write response data
	if _, err := buffer.Write(msg.Data); err != nil {
		return err
	}

	// flush data to network socket stream
	if err := buffer.Flush(); err != nil {
		return err
	}

	return nil
}

// noReply is the SMFIP_NR_* flag of each command that has one.
var noReply = map[Code]OptProtocol{
	CodeConn:    OptNoConnReply,
	CodeHelo:    OptNoHeloReply,
	CodeMail:    OptNoMailReply,
	CodeRcpt:    OptNoRcptReply,
	CodeData:    OptNoDataReply,
	CodeUnknown: OptNoUnknownReply,
	CodeHeader:  OptNoHeaderReply,
	CodeEOH:     OptNoEOHReply,
	CodeBody:    OptNoBodyReply,
}

// Process processes incoming milter commands
func (m *milterSession) Process(msg *Message) (Response, error) {
	switch Code(msg.Code) {
	case CodeAbort:
		// abort current message and start over
		defer func() {
			m.headers = nil
			m.macros = nil
		}()
		return nil, m.backend.Abort(newModifier(m))

	case CodeBody:
		// body chunk
		return m.backend.BodyChunk(msg.Data, newModifier(m))

	case CodeConn:
		// new connection, get hostname
		hostname := readCString(msg.Data)
		if len(msg.Data) < len(hostname)+2 {
			return nil, errors.New("milter: malformed connect command")
		}
		msg.Data = msg.Data[len(hostname)+1:]
		// get protocol family
		protocolFamily := msg.Data[0]
		msg.Data = msg.Data[1:]
		// get port
		var port uint16
		if protocolFamily == '4' || protocolFamily == '6' {
			if len(msg.Data) < 2 {
				return RespTempFail, nil
			}
			port = binary.BigEndian.Uint16(msg.Data)
			msg.Data = msg.Data[2:]
		}
		// get address
		address := readCString(msg.Data)
		// convert address and port to human readable string
		family := map[byte]string{
			'U': "unknown",
			'L': "unix",
			'4': "tcp4",
			'6': "tcp6",
		}
		// run handler and return
		return m.backend.Connect(
			hostname,
			family[protocolFamily],
			port,
			net.ParseIP(address),
			newModifier(m))

	case CodeMacro:
		if len(msg.Data) == 0 {
			return nil, errors.New("milter: malformed macro command")
		}
		// define macros
		m.macros = make(map[string]string)
		// convert data to Go strings
		data := decodeCStrings(msg.Data[1:])
		if len(data) != 0 {
			if len(data)%2 == 1 {
				data = append(data, "")
			}

			// store data in a map
			for i := 0; i < len(data); i += 2 {
				m.macros[data[i]] = data[i+1]
			}
		}
		// do not send response
		return nil, nil

	case CodeEOB:
		// call and return milter handler
		return m.backend.Body(newModifier(m))

	case CodeHelo:
		// helo command
		name := strings.TrimSuffix(string(msg.Data), null)
		return m.backend.Helo(name, newModifier(m))

	case CodeHeader:
		// The fields are not collected for the end of headers: a message's
		// header can be megabytes, and a Milter keeps what it needs.
		headerData := decodeCStrings(msg.Data)
		// headers with an empty body appear as `text\x00\x00`, decodeCStrings will drop the empty body
		if len(headerData) == 1 {
			headerData = append(headerData, "")
		}
		if len(headerData) == 2 {
			// call and return milter handler
			return m.backend.Header(headerData[0], headerData[1], newModifier(m))
		}

	case CodeMail:
		// envelope from address
		from := readCString(msg.Data)
		return m.backend.MailFrom(strings.Trim(from, "<>"), newModifier(m))

	case CodeEOH:
		// end of headers
		return m.backend.Headers(m.headers, newModifier(m))

	case CodeOptNeg:
		// Agree on what both sides support, as libmilter does: the lower
		// protocol version, and the actions and protocol steps the MTA offers.
		version := serverProtocolVersion
		if len(msg.Data) >= 12 {
			if v := binary.BigEndian.Uint32(msg.Data); v < version {
				version = v
			}
			m.actions &= OptAction(binary.BigEndian.Uint32(msg.Data[4:]))
			m.protocol &= OptProtocol(binary.BigEndian.Uint32(msg.Data[8:]))
		}
		if n, ok := m.backend.(Negotiator); ok {
			n.Negotiated(version, m.actions, m.protocol)
		}
		var buffer bytes.Buffer
		// prepare response data
		for _, value := range []uint32{version, uint32(m.actions), uint32(m.protocol)} {
			if err := binary.Write(&buffer, binary.BigEndian, value); err != nil {
				return nil, err
			}
		}
		// append requested symlist
		if m.actions&OptSetSymList != 0 {
			for stage, macros := range m.server.SymList {
				binary.Write(&buffer, binary.BigEndian, stage)
				for i, macro := range macros {
					if i != 0 {
						buffer.WriteByte(' ')
					}
					buffer.WriteString(macro)
				}
				buffer.WriteByte(0)
			}
		}
		// build and send packet
		return NewResponse('O', buffer.Bytes()), nil

	case CodeQuit:
		// client requested session close
		return nil, errCloseSession

	case CodeRcpt:
		// envelope to address
		to := readCString(msg.Data)
		return m.backend.RcptTo(strings.Trim(to, "<>"), newModifier(m))

	case CodeData:
		// data, ignore

	case CodeUnknown:
		// an unknown SMTP command: nothing to filter

	default:
		// print error and close session
		log.Printf("Unrecognized command code: %c", msg.Code)
		return nil, errCloseSession
	}

	// by default continue with next milter message
	return RespContinue, nil
}

// HandleMilterComands processes all milter commands in the same connection
func (m *milterSession) HandleMilterCommands() {
	defer func() {
		if v := recover(); v != nil {
			log.Printf("panic handling command: %v\n%s", v, debug.Stack())
		}

		m.conn.Close()
	}()

	for {
		msg, err := m.ReadPacket()
		if err != nil {
			if err != io.EOF {
				log.Printf("Error reading milter command: %v", err)
			}
			return
		}

		resp, err := m.Process(msg)
		if Code(msg.Code) != CodeMacro {
			// Macros serve the command they came before; kept longer, a
			// macro packet of up to 1 MB would stay pinned while the MTA is
			// silent, as it is during DATA.
			m.macros = nil
		}
		if err != nil {
			if err != errCloseSession {
				// log error condition
				log.Printf("Error performing milter command: %v", err)
			}
			return
		}

		// ignore empty responses, and any response to a command the MTA
		// does not wait for (SMFIP_NR_*): it would be read as the next one's
		if resp != nil && m.protocol&noReply[Code(msg.Code)] == 0 {
			// send back response message
			if err = m.WritePacket(resp.Response()); err != nil {
				log.Printf("Error writing packet: %v", err)
				return
			}

			if !resp.Continue() {
				// prepare backend for next message
				m.backend = m.server.newMilter(m.conn)
			}
		}
		if m.out.Buffered() > 0 {
			if err := m.out.Flush(); err != nil {
				log.Printf("Error writing packet: %v", err)
				return
			}
		}
	}
}
